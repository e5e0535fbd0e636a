"""The backend seam: one object per configured model endpoint, one async method that streams N branches."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the engine and emulation plan requests from these flags."""

    raw_prompt: bool = False  # accepts a raw text prompt (a completion endpoint)
    chat: bool = False  # accepts role-tagged messages
    n: bool = False  # several samples in one request
    logprobs: bool = False  # returns token log-probabilities
    max_top_logprobs: int = 0  # how many alternatives per token it can return
    prefill: bool = False  # continues a final, partial assistant message
    seed: bool = False  # honours a sampling seed


@dataclass
class GenRequest:
    """One request for `n` branches. Exactly one of `prompt` / `messages` is set."""

    model: str  # the provider's model id
    prompt: str | None = None
    # Chat messages as {"role": "system"|"user"|"assistant", "content": str}; a final
    # assistant message is a prefill to be continued (only where capabilities.prefill).
    messages: list[dict[str, str]] | None = None
    n: int = 1
    # Canonical sampler parameters (temperature, top_p, top_k, min_p, typical_p,
    # presence_penalty, frequency_penalty, repetition_penalty, seed, max_tokens, stop,
    # logprobs = number of alternatives wanted per token, …). The backend maps them to
    # its wire names and reports what it dropped.
    params: dict[str, Any] = field(default_factory=dict)
    # Backend-only fields merged verbatim into the request body.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Token:
    text: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Chunk:
    """A piece of one branch's output. `index` is the branch, 0..n-1."""

    index: int
    text: str = ""
    tokens: list[Token] | None = None
    finish_reason: str | None = None  # set on the branch's last chunk
    usage: dict[str, Any] | None = None
    # "branch": this usage is the branch's own; "request": it covers every branch of the request.
    usage_scope: str = "branch"
    model: str | None = None  # the model the provider says answered
    role: str | None = None  # the role the provider says the reply speaks in (chat APIs)


@dataclass
class WireParams:
    """Canonical parameters translated for one backend: what is sent, and what was not."""

    body: dict[str, Any]
    dropped: dict[str, str] = field(default_factory=dict)  # canonical name -> why
    renamed: dict[str, str] = field(default_factory=dict)  # canonical name -> wire name


class Backend(abc.ABC):
    """A model endpoint. Implementations live one per module beside this one."""

    name: str = "backend"  # e.g. "openai", "openai-chat", "anthropic", "embedded"
    capabilities: Capabilities = Capabilities()
    base_url: str = ""
    # The sampler values the backend uses for parameters a request leaves out, by canonical
    # name, where it knows them (a local engine); None: the provider decides, unseen.
    sampler_defaults: Mapping[str, Any] | None = None
    # Facts about how the backend ran that each node records (e.g. CPU threads).
    runtime: Mapping[str, Any] | None = None

    @abc.abstractmethod
    def wire_params(self, request: GenRequest) -> WireParams:
        """Translate the canonical parameters of `request` into this backend's body fields."""

    @abc.abstractmethod
    def stream(self, request: GenRequest) -> AsyncGenerator[Chunk, None]:
        """Yield chunks for all `request.n` branches, interleaved, until every branch finished.

        Raises BackendError for failures before any output and StreamCut when a
        stream ends early (chunks already yielded stay valid).
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections, processes or loaded models."""
