"""Local model servers: which one answers at a URL, and what that means for emulation.

llama.cpp, vLLM, SGLang, LM Studio and Ollama all speak the OpenAI chat format, but
most also serve a raw completion endpoint (`/completions`) and continue an open
assistant turn, which is how instruct weights continue text best (measured:
bench/bench_emulation.py). A model registered as a plain `openai-chat` model says none
of that, so `loom models add` asks the server's `/models` who it is and records the
answer as `options.server` (the capability table's provider name for the server)
and, where the server has a raw endpoint, `options.capabilities.raw_prompt`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from loom.config import ModelConfig

DETECT_TIMEOUT = 3.0  # seconds: a local server answers at once; a dead one must not stall `add`


@dataclass(frozen=True)
class Server:
    name: str  # the capability table's provider name, and `--server NAME`
    label: str
    owned_by: tuple[str, ...]  # what its `/models` says in `owned_by`
    raw_prompt: bool  # serves `/completions` with the prompt as sent (no chat template)


SERVERS: Mapping[str, Server] = {
    s.name: s
    for s in (
        Server("llamacpp", "llama.cpp", ("llamacpp",), True),
        Server("vllm", "vLLM", ("vllm",), True),
        Server("sglang", "SGLang", ("sglang",), True),
        Server("lmstudio", "LM Studio", ("organization_owner",), True),
        # Ollama's /v1/completions applies the chat template; only /api/generate is raw.
        # `owned_by` is the model's namespace, "library" unless pulled from a user's.
        Server("ollama", "Ollama", ("library", "ollama"), False),
    )
}


SERVER_NAMES = tuple(SERVERS)
OPENAI_PROVIDERS = ("openai", "openai-chat")  # the wire format local servers speak


def hosted(base_url: str) -> bool:
    """Whether `base_url` is a hosted API loom knows (never a local server: not asked)."""
    from loom.generation.backends import SERVICES

    host = urlsplit(base_url).hostname or ""
    return any(needle in host for needle in SERVICES)


def server_options(name: str, provider: str) -> dict[str, Any]:
    """The model options that say `provider` reaches its model through server `name`."""
    options: dict[str, Any] = {"server": name}
    if provider == "openai-chat" and SERVERS[name].raw_prompt:
        options["capabilities"] = {"raw_prompt": True}
    return options


def _root(base_url: str) -> str:
    """The server's root: `http://host:port` without the `/v1` API prefix."""
    parts = urlsplit(base_url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def identify(models: Any) -> str | None:
    """The server that sent this `/models` answer (an OpenAI model list), if known."""
    rows = models.get("data") if isinstance(models, dict) else None
    if not isinstance(rows, list):
        return None
    owners = {str(r.get("owned_by", "")).lower() for r in rows if isinstance(r, dict)}
    for server in SERVERS.values():
        if owners & {o.lower() for o in server.owned_by}:
            return server.name
    return None


def detect(base_url: str, api_key: str | None = None) -> str | None:
    """Ask the server at `base_url` (…/v1) who it is; None when it does not say or answer.

    One GET of `/models`; when its owners name no known server, one GET of Ollama's
    `/api/version` (Ollama lists a model under its owner's namespace).
    """
    import httpx2

    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with httpx2.Client(
            timeout=DETECT_TIMEOUT, follow_redirects=False, headers=headers
        ) as client:
            reply = client.get(base_url.rstrip("/") + "/models")
            found = identify(reply.json()) if reply.status_code == 200 else None
            if found is None:
                version = client.get(_root(base_url) + "/api/version")
                if version.status_code == 200 and "version" in _json_object(version):
                    found = "ollama"
    except (httpx2.HTTPError, ValueError):
        return None
    return found


def _json_object(reply: Any) -> dict[str, Any]:
    try:
        data = reply.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def auto_methods(model: ModelConfig) -> list[str]:
    """The emulation methods `--emulate auto` tries for `model`, best first ([] if it cannot run)."""
    from loom.emulation.framing import choose_method
    from loom.errors import LoomError
    from loom.generation.backends import make_backend, table_provider
    from loom.generation.plan import capability_table

    try:
        backend = make_backend(model)
        entry = capability_table().lookup(table_provider(model), model.model)
        return choose_method(backend.capabilities, model.kind, entry)
    except LoomError:
        return []
