"""The provider registry: every provider loom speaks to, in one table, and live backends.

A provider is a wire format and its conventions: where it lives by default, which
environment variables hold its URL and key, which pass-through parameter families reach
it, what its token probabilities mean, how many requests it takes at once, and how to
build its backend. `loom.config` reads the defaults from here; the engine builds
backends through `make_backend` (backend modules are imported only then, so this
module stays cheap to import).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from loom.errors import ConfigError

if TYPE_CHECKING:
    from loom.config import ModelConfig
    from loom.generation.backends.base import Backend


@dataclass(frozen=True)
class Provider:
    name: str
    kind: str  # the kind of model it serves unless told: base | chat
    base_url: str
    base_url_env: str | None
    key_env: str | None
    families: tuple[str, ...]  # pass-through namespaces (`--param llamacpp.x=1`) that reach it
    # What its token log-probabilities describe: "post-sampling" (the distribution the token
    # was drawn from), "pre-sampling" (the raw model distribution), or "unknown".
    logprobs: str
    concurrency: int  # requests in flight per model unless the model's `concurrency` says
    build: Callable[[ModelConfig], Backend]


def _http_options(model: ModelConfig) -> Any:
    from loom.generation.backends.http import HttpOptions

    known = {f.name for f in dataclasses.fields(HttpOptions)}
    return HttpOptions(**{k: v for k, v in model.options.items() if k in known})


def _http(model: ModelConfig) -> dict[str, Any]:
    return {
        "api_key": model.api_key(),
        "model": model.model,
        "stream": bool(model.options.get("stream", True)),
        "options": _http_options(model),
        "capabilities": model.options.get("capabilities"),
    }


def _openai(model: ModelConfig) -> Backend:
    from loom.generation.backends.openai_compat import OpenAICompletions

    return OpenAICompletions(model.base_url, **_http(model))


def _openai_chat(model: ModelConfig) -> Backend:
    from loom.generation.backends.openai_compat import OpenAIChat

    return OpenAIChat(model.base_url, **_http(model))


def _anthropic(model: ModelConfig) -> Backend:
    from loom.generation.backends.anthropic import AnthropicMessages

    return AnthropicMessages(model.base_url, **_http(model))


def _embedded(model: ModelConfig) -> Backend:
    from loom.generation.backends.embedded import EmbeddedLlama, ensure_default_model

    options = model.options
    path = options.get("model_path") or ensure_default_model()
    return EmbeddedLlama(
        path,
        threads=int(options["threads"]) if "threads" in options else None,  # None: the cores
        n_parallel=int(options.get("n_parallel", EMBEDDED_SLOTS)),
        ctx_per_seq=int(options.get("ctx_per_seq", model.context or 2048)),
    )


EMBEDDED_SLOTS = 4  # sequences the embedded model decodes together (llama.cpp slots)
REMOTE_CONCURRENCY = 16  # a 16-child sweep against one provider runs in one wave

PROVIDERS: Mapping[str, Provider] = {
    p.name: p
    for p in (
        Provider(
            "openai",
            "base",
            "https://api.openai.com/v1",
            "OPENAI_BASE_URL",
            "OPENAI_API_KEY",
            ("openai",),
            "post-sampling",
            REMOTE_CONCURRENCY,
            _openai,
        ),
        Provider(
            "openai-chat",
            "chat",
            "https://api.openai.com/v1",
            "OPENAI_BASE_URL",
            "OPENAI_API_KEY",
            ("openai", "openai-chat"),
            "post-sampling",
            REMOTE_CONCURRENCY,
            _openai_chat,
        ),
        Provider(
            "anthropic",
            "chat",
            "https://api.anthropic.com",
            "ANTHROPIC_BASE_URL",
            "ANTHROPIC_API_KEY",
            ("anthropic",),
            "unknown",
            REMOTE_CONCURRENCY,
            _anthropic,
        ),
        # llama.cpp's n_probs without post_sampling_probs: the model's raw distribution.
        Provider(
            "embedded",
            "base",
            "",
            None,
            None,
            ("embedded", "llamacpp"),
            "pre-sampling",
            EMBEDDED_SLOTS,
            _embedded,
        ),
    )
}

# Hosted services reached through an OpenAI-compatible provider, by a piece of their host
# name: the capability table's provider name for each.
SERVICES: Mapping[str, str] = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "api.deepseek.com": "deepseek",
    "openrouter.ai": "openrouter",
    "api.together.xyz": "together",
    "api.mistral.ai": "mistral",
    "api.moonshot": "moonshot",
    "dashscope": "dashscope",
}


def provider(name: str) -> Provider:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise ConfigError(f"unknown provider {name!r} (known: {', '.join(PROVIDERS)})") from None


def table_provider(model: ModelConfig) -> str:
    """The capability table's name for who serves `model` (options.server overrides the guess)."""
    if model.options.get("server"):
        return str(model.options["server"])
    if model.provider in ("embedded", "anthropic"):
        return model.provider
    host = urlsplit(model.base_url).hostname or ""
    return next((name for needle, name in SERVICES.items() if needle in host), "")


def default_concurrency(model: ModelConfig) -> int:
    """Requests in flight for `model`: its `concurrency` option, else its provider's default
    (the embedded model: one per llama.cpp slot)."""
    given = model.options.get("concurrency")
    if given is not None:
        return max(1, int(given))
    if model.provider == "embedded":
        return max(1, int(model.options.get("n_parallel", EMBEDDED_SLOTS)))
    return provider(model.provider).concurrency


def make_backend(model: ModelConfig) -> Backend:
    """A backend for `model`. Raises ConfigError when it cannot be used (e.g. a missing key)."""
    usable, why = model.usable()
    if not usable:
        raise ConfigError(f"model {model.name!r} cannot be used: {why}")
    return provider(model.provider).build(model)


class BackendPool:
    """Live backends by model name: made on first use, closed together.

    A front end that generates many times (the TUI, a server) keeps one pool, so the
    embedded model loads once and HTTP connections are reused; a one-shot command
    makes one per generation.
    """

    def __init__(self, given: Mapping[str, Backend] | None = None) -> None:
        self._given = dict(given or {})
        self._made: dict[str, Backend] = {}

    def get(self, model: ModelConfig) -> Backend:
        backend = self._given.get(model.name) or self._made.get(model.name)
        if backend is None:
            backend = self._made[model.name] = make_backend(model)
        return backend

    async def aclose(self) -> None:
        """Close the backends this pool made (not the ones it was given)."""
        made, self._made = list(self._made.values()), {}
        for backend in made:
            with contextlib.suppress(Exception):  # closing must never hide the outcome
                await backend.aclose()
