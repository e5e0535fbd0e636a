"""From a configured model to a live backend object. Each backend module is imported only here, on use."""

from __future__ import annotations

import dataclasses
from typing import Any

from loom.config import ModelConfig
from loom.errors import ConfigError
from loom.generation.backends.base import Backend


def _http_options(model: ModelConfig) -> Any:
    from loom.generation.backends.http import HttpOptions

    known = {f.name for f in dataclasses.fields(HttpOptions)}
    chosen = {k: v for k, v in model.options.items() if k in known}
    return HttpOptions(**chosen)


def make_backend(model: ModelConfig) -> Backend:
    """A backend for `model`. Raises ConfigError when it cannot be used (e.g. a missing key)."""
    usable, why = model.usable()
    if not usable:
        raise ConfigError(f"model {model.name!r} cannot be used: {why}")
    options = model.options
    capabilities = options.get("capabilities")
    if model.provider in ("openai", "openai-chat", "anthropic"):
        http = {
            "api_key": model.api_key(),
            "model": model.model,
            "stream": bool(options.get("stream", True)),
            "options": _http_options(model),
            "capabilities": capabilities,
        }
        if model.provider == "anthropic":
            from loom.generation.backends.anthropic import AnthropicMessages

            return AnthropicMessages(model.base_url, **http)
        from loom.generation.backends import openai_compat

        cls = (
            openai_compat.OpenAICompletions
            if model.provider == "openai"
            else openai_compat.OpenAIChat
        )
        return cls(model.base_url, **http)
    if model.provider == "embedded":
        from loom.generation.backends.embedded import EmbeddedLlama, ensure_default_model

        path = options.get("model_path") or ensure_default_model()
        return EmbeddedLlama(
            path,
            threads=int(options["threads"]) if "threads" in options else None,
            n_parallel=int(options.get("n_parallel", 4)),
            ctx_per_seq=int(options.get("ctx_per_seq", model.context or 2048)),
        )
    raise ConfigError(f"model {model.name!r}: unknown provider {model.provider!r}")
