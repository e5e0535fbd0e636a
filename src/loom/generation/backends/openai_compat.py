"""OpenAI-compatible HTTP backends: `/completions` (raw prompt) and `/chat/completions`.

The same wire format is spoken by OpenAI, vLLM, llama.cpp's server, SGLang, TabbyAPI,
Together, OpenRouter and many more; they differ in which sampler fields they accept.
That difference is data (`WIRE_NAMES`, `LIMITS`), selected by a dialect.

Streamed or not, `stream()` yields Chunks routed by `choices[i].index`. The request's
usage (covering all n choices) rides on the stream's last chunk, with `input_tokens` /
`output_tokens` added beside the provider's own names. Without `n` support
(`capabilities={"n": False}`) n branches go as n requests with seeds seed+i.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from functools import partial
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from loom.errors import BackendError, StreamCut
from loom.generation.backends.base import (
    Backend,
    Capabilities,
    Chunk,
    GenRequest,
    Token,
    WireParams,
)
from loom.generation.backends.http import Endpoint, HttpOptions, ServerEvent, fan_out

__all__ = ["DIALECTS", "LIMITS", "LOGPROBS_KIND", "WIRE_NAMES", "OpenAIChat", "OpenAICompletions"]

# OpenAI, vLLM (default logprobs_mode) and llama.cpp (without post_sampling_probs) all
# report the model's own distribution, before temperature and truncation.
LOGPROBS_KIND = "pre-sampling"

Dialect = Literal["generic", "openai", "llama.cpp"]
DIALECTS: tuple[Dialect, ...] = ("generic", "openai", "llama.cpp")

# Canonical parameter -> wire field. Looked up as "dialect:endpoint", then "dialect",
# then "*"; None means that server has no such field. "generic" is the extended
# OpenAI API of vLLM, SGLang, TabbyAPI, Together and OpenRouter.
WIRE_NAMES: dict[str, dict[str, str | None]] = {
    "temperature": {"*": "temperature"},
    "top_p": {"*": "top_p"},
    "top_k": {"*": "top_k", "openai": None},
    "min_p": {"*": "min_p", "openai": None},
    "typical_p": {"*": "typical_p", "openai": None},
    "presence_penalty": {"*": "presence_penalty"},
    "frequency_penalty": {"*": "frequency_penalty"},
    "repetition_penalty": {
        "*": "repetition_penalty",
        "llama.cpp": "repeat_penalty",
        "openai": None,
    },
    "seed": {"*": "seed"},
    # OpenAI deprecated max_tokens on chat (reasoning models reject it); others still want it.
    "max_tokens": {"*": "max_tokens", "openai:chat": "max_completion_tokens"},
    "stop": {"*": "stop"},
    "logit_bias": {"*": "logit_bias"},
    "logprobs": {"*": "logprobs", "*:chat": "top_logprobs"},
}

# Documented upper bounds, per dialect: how many stop sequences and log-prob alternatives.
LIMITS: dict[str, dict[str, int]] = {
    "openai": {"stop": 4, "logprobs:completions": 5, "logprobs:chat": 20},
    "generic": {"logprobs:completions": 20, "logprobs:chat": 20},
    "llama.cpp": {"logprobs:completions": 20, "logprobs:chat": 20},
}

_LABEL = {"openai": "api.openai.com", "generic": "this server", "llama.cpp": "llama.cpp"}


def _wire_name(name: str, dialect: str, kind: str) -> tuple[bool, str | None]:
    """(known, wire name) for a canonical parameter."""
    names = WIRE_NAMES.get(name)
    if names is None:
        return False, None
    for key in (f"{dialect}:{kind}", dialect, f"*:{kind}", "*"):
        if key in names:
            return True, names[key]
    return True, None


def _detect_dialect(base_url: str) -> Dialect:
    return "openai" if urlsplit(base_url).hostname == "api.openai.com" else "generic"


class _OpenAIBackend(Backend):
    kind: ClassVar[Literal["completions", "chat"]]
    path: ClassVar[str]

    def __init__(
        self,
        base_url: str = "https://api.openai.com/v1",
        *,
        api_key: str | None = None,
        model: str | None = None,
        dialect: Dialect | None = None,
        stream: bool = True,
        options: HttpOptions | None = None,
        headers: Mapping[str, str] | None = None,
        capabilities: Capabilities | Mapping[str, Any] | None = None,
    ) -> None:
        """
        base_url: up to and including the version, e.g. `http://127.0.0.1:8080/v1`.
        model: used when a request names none.
        dialect: which sampler fields the server takes; detected from the URL if None.
        stream: stream by default; `request.extra["stream"]` overrides per request.
        capabilities: a Capabilities, or field overrides on this backend's defaults
            (e.g. `{"n": False}` for OpenRouter, which ignores `n`).
        """
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.dialect: Dialect = dialect or _detect_dialect(base_url)
        if self.dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")
        self.streaming = stream
        self.limits = LIMITS.get(self.dialect, {})
        defaults = Capabilities(
            raw_prompt=self.kind == "completions",
            chat=self.kind == "chat",
            n=True,
            logprobs=True,
            max_top_logprobs=self.limits.get(f"logprobs:{self.kind}", 20),
            seed=True,
        )
        if isinstance(capabilities, Capabilities):
            self.capabilities = capabilities
        else:
            self.capabilities = dataclasses.replace(defaults, **dict(capabilities or {}))
        auth = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._endpoint = Endpoint(
            self.name,
            self.base_url,
            headers={**(headers or {}), **auth},
            options=options,
            secrets=[api_key],
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._endpoint.display_url!r}, dialect={self.dialect!r})"

    async def aclose(self) -> None:
        await self._endpoint.aclose()

    # -- parameters -------------------------------------------------------------

    def wire_params(self, request: GenRequest) -> WireParams:
        wp = WireParams(body={})
        label = _LABEL[self.dialect]
        for name, value in request.params.items():
            if value is None:
                continue
            known, wire = _wire_name(name, self.dialect, self.kind)
            if not known:
                wp.dropped[name] = (
                    f"not a parameter loom knows for {self.name}; put it in extra to send it as is"
                )
                continue
            if wire is None:
                wp.dropped[name] = f"{label} has no {name}"
                continue
            if name == "seed" and not self.capabilities.seed:
                wp.dropped[name] = f"{label} ignores seeds"
                continue
            if name == "logprobs":
                self._logprobs(value, wire, wp)
                continue
            if name == "stop":
                value = self._stop(value, wp)
            wp.body[wire] = value
            if wire != name:
                wp.renamed[name] = wire
        if request.n > 1:
            if self.capabilities.n:
                wp.body["n"] = request.n
            else:
                wp.dropped["n"] = f"{label} has no n: sent as {request.n} separate requests"
        return wp

    def _logprobs(self, value: Any, wire: str, wp: WireParams) -> None:
        if value is False:
            return
        if not self.capabilities.logprobs:
            wp.dropped["logprobs"] = f"{_LABEL[self.dialect]} returns no log-probabilities"
            return
        k = 0 if value is True else int(value)  # True: the sampled token's only
        cap = self.capabilities.max_top_logprobs
        if k > cap:
            wp.dropped["logprobs"] = (
                f"asked for {k} alternatives per token; sent {cap}, the most it returns"
            )
            k = cap
        if self.kind == "chat":
            wp.body["logprobs"] = True
            if k:
                wp.body[wire] = k
                wp.renamed["logprobs"] = wire
        else:
            wp.body[wire] = k

    def _stop(self, value: Any, wp: WireParams) -> Any:
        limit = self.limits.get("stop")
        if limit is None or isinstance(value, str) or len(value) <= limit:
            return value
        stops = list(value)
        wp.dropped["stop"] = (
            f"{_LABEL[self.dialect]} takes at most {limit} stop sequences; "
            f"not sent: {stops[limit:]!r}"
        )
        return stops[:limit]

    # -- requests -----------------------------------------------------------------

    def _body(self, request: GenRequest, wp: WireParams) -> tuple[dict[str, Any], bool]:
        model = request.model or self.model
        if not model:
            raise BackendError(f"{self.name}: no model given (request.model or model=...)")
        body: dict[str, Any] = {"model": model}
        body.update(self._input(request))
        body.update(wp.body)
        streaming = bool(request.extra.get("stream", self.streaming))
        if streaming:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update((k, v) for k, v in request.extra.items() if k != "stream")
        return body, streaming

    @abc.abstractmethod
    def _input(self, request: GenRequest) -> dict[str, Any]:
        """The prompt or messages part of the body."""

    async def stream(self, request: GenRequest) -> AsyncGenerator[Chunk, None]:
        if request.n < 1:
            raise BackendError(f"{self.name}: n must be at least 1, got {request.n}")
        wp = self.wire_params(request)
        body, streaming = self._body(request, wp)
        if request.n > 1 and "n" not in body:
            # One request per branch. The same seed would give N identical samples.
            def branch(i: int) -> dict[str, Any]:
                if "seed" in body and isinstance(body["seed"], int):
                    return {**body, "seed": body["seed"] + i}
                return body

            runs = [partial(self._retrying, branch(i), 1, streaming) for i in range(request.n)]
            async with aclosing(fan_out(runs)) as chunks:
                async for chunk in chunks:
                    yield chunk
            return
        async with aclosing(self._retrying(body, request.n, streaming)) as chunks:
            async for chunk in chunks:
                yield chunk

    def _retrying(
        self, body: dict[str, Any], n: int, streaming: bool
    ) -> AsyncGenerator[Chunk, None]:
        attempt = self._streamed if streaming else self._whole
        return self._endpoint.retrying(lambda: attempt(body, n))

    async def _whole(self, body: dict[str, Any], n: int) -> AsyncGenerator[Chunk, None]:
        payload = await self._endpoint.post_json(self.path, body)
        if not isinstance(payload, dict):
            raise self._endpoint.malformed("the response", "expected an object")
        if payload.get("error"):  # some servers send "error": null
            raise self._endpoint.inband_error(payload)
        model = payload.get("model")
        choices = payload.get("choices")
        if not isinstance(choices, list):
            raise self._endpoint.malformed("the response", "no choices")
        parsed = (self._chunk(c, n, model, "message", keep_empty=True) for c in choices)
        chunks = sorted((c for c in parsed if c is not None), key=lambda c: c.index)
        for chunk in chunks:
            chunk.finish_reason = chunk.finish_reason or "unknown"
        if chunks and isinstance(payload.get("usage"), dict):
            chunks[-1].usage = _usage(payload["usage"])
            chunks[-1].usage_scope = "request"
        for chunk in chunks:
            yield chunk
        missing = sorted(set(range(n)) - {c.index for c in chunks})
        if missing:
            raise self._endpoint.error(
                f"{self._endpoint.display_url} returned {n - len(missing)} of {n} choices",
                details={"missing_branches": missing},
            )

    async def _streamed(self, body: dict[str, Any], n: int) -> AsyncGenerator[Chunk, None]:
        finished: set[int] = set()
        roles: dict[int, str] = {}
        model: str | None = None
        usage: dict[str, Any] | None = None
        # Once every branch has finished, the newest chunk is held back: usage arrives
        # after it, and the stream's last chunk is where it belongs.
        last: Chunk | None = None
        async with aclosing(self._endpoint.events(self.path, body, last=_is_done)) as events:
            async for event in events:
                if _is_done(event):
                    break
                payload = self._endpoint.parse_event(event)
                if event.event == "error" or payload.get("error"):
                    raise self._endpoint.inband_error(payload)
                model = payload.get("model") or model
                if isinstance(payload.get("usage"), dict):
                    usage = _usage(payload["usage"])
                for choice in payload.get("choices") or ():
                    chunk = self._chunk(choice, n, model, "delta")
                    if chunk is None:
                        continue
                    if chunk.role and not (chunk.text or chunk.tokens or chunk.finish_reason):
                        # A role announced before any text is no output yet (a cut now can
                        # still be retried): it travels with the branch's first real chunk.
                        roles[chunk.index] = chunk.role
                        continue
                    chunk.role = chunk.role or roles.pop(chunk.index, None)
                    if chunk.finish_reason is not None:
                        finished.add(chunk.index)
                    if len(finished) == n:
                        if last is not None:
                            yield last
                        last = chunk
                        continue
                    yield chunk
        if last is None:
            unfinished = [i for i in range(n) if i not in finished]
            raise self._endpoint.error(
                f"stream from {self._endpoint.display_url} ended before "
                f"branch{'es' if len(unfinished) > 1 else ''} "
                f"{', '.join(map(str, unfinished))} finished",
                cls=StreamCut,
                retryable=True,  # a retry is safe only while nothing was yielded
                details={"unfinished_branches": unfinished},
            )
        last.usage = usage
        last.usage_scope = "request"
        yield last

    def _chunk(
        self, choice: Any, n: int, model: str | None, field: str, *, keep_empty: bool = False
    ) -> Chunk | None:
        if not isinstance(choice, dict):
            raise self._endpoint.malformed("a choice", f"expected an object, got {choice!r:.80}")
        index = choice.get("index", 0)
        if not isinstance(index, int) or not 0 <= index < n:
            raise self._endpoint.error(
                f"{self._endpoint.display_url} sent choice index {index!r} for n={n}"
            )
        text = self._text(choice, field)
        tokens = _tokens(choice.get("logprobs"))
        finish = choice.get("finish_reason")
        message = choice.get(field)
        role = message.get("role") if isinstance(message, dict) else None
        chunk = Chunk(index=index, text=text, tokens=tokens, finish_reason=finish, model=model)
        chunk.role = role if isinstance(role, str) else None
        if not text and not tokens and finish is None and not keep_empty:
            return None if chunk.role is None else chunk  # role-only: held by the caller
        return chunk

    @abc.abstractmethod
    def _text(self, choice: dict[str, Any], field: str) -> str:
        """A choice's text; `field` is "delta" when streamed, "message" when not."""


class OpenAICompletions(_OpenAIBackend):
    """`POST {base_url}/completions` with a raw prompt: real base-model continuation."""

    name = "openai"
    kind = "completions"
    path = "/completions"

    def _input(self, request: GenRequest) -> dict[str, Any]:
        if request.prompt is None:
            raise BackendError(f"{self.name}: needs request.prompt (use openai-chat for messages)")
        return {"prompt": request.prompt}

    def _text(self, choice: dict[str, Any], field: str) -> str:
        text = choice.get("text")
        return text if isinstance(text, str) else ""


class OpenAIChat(_OpenAIBackend):
    """`POST {base_url}/chat/completions` with role-tagged messages.

    A local server (llama.cpp, vLLM, LM Studio…) also serves `/completions`: with
    `capabilities={"raw_prompt": True}` a request carrying a raw prompt goes there.
    """

    name = "openai-chat"
    kind = "chat"
    path = "/chat/completions"

    def __init__(self, base_url: str = "https://api.openai.com/v1", **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._settings = (base_url, kwargs)
        self._completions: OpenAICompletions | None = None

    def _raw(self, request: GenRequest) -> OpenAICompletions | None:
        """The `/completions` twin that serves raw-prompt requests, when this server has one."""
        if request.messages is not None or not self.capabilities.raw_prompt:
            return None
        if self._completions is None:
            base_url, kwargs = self._settings
            self._completions = OpenAICompletions(base_url, **{**kwargs, "dialect": self.dialect})
        return self._completions

    def wire_params(self, request: GenRequest) -> WireParams:
        raw = self._raw(request)
        return raw.wire_params(request) if raw else super().wire_params(request)

    async def stream(self, request: GenRequest) -> AsyncGenerator[Chunk, None]:
        raw = self._raw(request)
        async with aclosing(raw.stream(request) if raw else super().stream(request)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def aclose(self) -> None:
        await super().aclose()
        if self._completions is not None:
            await self._completions.aclose()

    def _input(self, request: GenRequest) -> dict[str, Any]:
        if request.messages is None:
            raise BackendError(f"{self.name}: needs request.messages (use openai for a raw prompt)")
        return {"messages": request.messages}

    def _text(self, choice: dict[str, Any], field: str) -> str:
        message = choice.get(field)
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else ""


# -- response pieces -----------------------------------------------------------------


def _usage(raw: dict[str, Any]) -> dict[str, Any]:
    """The provider's usage, plus input_tokens / output_tokens under the common names."""
    usage = dict(raw)
    if "prompt_tokens" in raw:
        usage.setdefault("input_tokens", raw["prompt_tokens"])
    if "completion_tokens" in raw:
        usage.setdefault("output_tokens", raw["completion_tokens"])
    return usage


def _float(value: Any) -> float:
    # null log-probs occur (the first echoed token); NaN says "unknown", unlike -inf.
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _tokens(logprobs: Any) -> list[Token] | None:
    """Tokens from either log-prob shape: chat's `content[]` or legacy parallel arrays."""
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    if isinstance(content, list):  # chat shape; llama.cpp uses it on /completions too
        out = []
        for entry in content:
            if not isinstance(entry, dict):
                continue
            top = [
                (str(alt.get("token", "")), _float(alt.get("logprob")))
                for alt in entry.get("top_logprobs") or ()
                if isinstance(alt, dict)
            ]
            out.append(Token(str(entry.get("token", "")), _float(entry.get("logprob")), top))
        return out or None
    tokens = logprobs.get("tokens")
    if not isinstance(tokens, list):
        return None
    values = logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or []
    out = []
    for i, text in enumerate(tokens):
        alts = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        top = sorted(((str(t), _float(lp)) for t, lp in alts.items()), key=lambda a: -a[1])
        out.append(Token(str(text), _float(values[i] if i < len(values) else None), top))
    return out or None


def _is_done(event: ServerEvent) -> bool:
    return event.data.strip() == "[DONE]"
