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
import math
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


# ---- a model's options (models.toml), checked where they are used ---------------------------

_MAY_BE_ZERO = frozenset({"max_retries", "backoff_base", "backoff_max", "max_retry_after"})


def number_option(
    model: ModelConfig, name: str, default: Any, *, whole: bool = False, positive: bool = True
) -> Any:
    """The number `name` in the model's options, else `default`; a value of the wrong kind
    is a ConfigError naming the model and the option, not a crash or a silent failure."""
    value = model.options.get(name)
    if value is None:
        return default
    fits = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value > 0 if positive else value >= 0)
        and (not whole or float(value).is_integer())
    )
    if not fits:
        kind = "a whole number" if whole else "a number"
        least = ("from 1" if whole else "above 0") if positive else "from 0"
        raise ConfigError(
            f"model {model.name!r}: option {name} must be {kind} {least}, got {value!r} "
            "(in models.toml)"
        )
    return int(value) if whole else float(value)


def _flag_option(model: ModelConfig, name: str, default: bool) -> bool:
    value = model.options.get(name, default)
    if not isinstance(value, bool):
        raise ConfigError(
            f"model {model.name!r}: option {name} must be true or false, got {value!r} "
            "(in models.toml)"
        )
    return value


def _capabilities_option(model: ModelConfig) -> Mapping[str, Any] | None:
    from loom.generation.backends.base import Capabilities

    value = model.options.get("capabilities")
    known = {f.name: f.default for f in dataclasses.fields(Capabilities)}
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        k in known and type(v) is type(known[k]) for k, v in value.items()
    ):
        raise ConfigError(
            f"model {model.name!r}: option capabilities must be a table of "
            f"{', '.join(known)} (true/false, max_top_logprobs a number), got {value!r} "
            "(in models.toml)"
        )
    return value


def _http_options(model: ModelConfig) -> Any:
    from loom.generation.backends.http import HttpOptions

    given = {}
    for f in dataclasses.fields(HttpOptions):
        if f.name in model.options:
            whole = isinstance(f.default, int)
            positive = f.name not in _MAY_BE_ZERO
            given[f.name] = number_option(model, f.name, None, whole=whole, positive=positive)
    return HttpOptions(**given)


def _http(model: ModelConfig) -> dict[str, Any]:
    return {
        "api_key": model.api_key(),
        "model": model.model,
        "stream": _flag_option(model, "stream", True),
        "options": _http_options(model),
        "capabilities": _capabilities_option(model),
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
        threads=number_option(model, "threads", None, whole=True),  # None: the cores
        n_parallel=number_option(model, "n_parallel", EMBEDDED_SLOTS, whole=True),
        ctx_per_seq=number_option(model, "ctx_per_seq", model.context or 2048, whole=True),
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
    given = number_option(model, "concurrency", None, whole=True)
    if given is not None:
        return int(given)
    if model.provider == "embedded":
        return int(number_option(model, "n_parallel", EMBEDDED_SLOTS, whole=True))
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
