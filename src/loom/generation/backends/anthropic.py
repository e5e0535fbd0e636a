"""Anthropic Messages API (`POST /v1/messages`), without the SDK.

Anthropic has no `n`, seed or log-probabilities: N branches are N concurrent requests,
interleaved into one stream. A final assistant message is a prefill the model continues;
its reply excludes the prefill, so the caller stitches the two.

Each branch's last chunk carries its finish reason ("stop", "length", or Anthropic's
own for anything else) and the usage of its request.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from functools import partial
from typing import Any

from loom.errors import BackendError, StreamCut
from loom.generation.backends.base import Backend, Capabilities, Chunk, GenRequest, WireParams
from loom.generation.backends.http import Endpoint, HttpOptions, ServerEvent, fan_out

__all__ = ["API_VERSION", "DEFAULT_MAX_TOKENS", "WIRE_NAMES", "AnthropicMessages"]

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 256  # the API requires max_tokens; loom's default branch length

# Canonical parameter -> Messages field, or why it cannot be sent.
WIRE_NAMES: dict[str, str | None] = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_tokens": "max_tokens",
    "stop": "stop_sequences",
    "seed": None,
    "logprobs": None,
    "min_p": None,
    "typical_p": None,
    "presence_penalty": None,
    "frequency_penalty": None,
    "repetition_penalty": None,
    "logit_bias": None,
}
_WHY_NOT = {
    "seed": "Anthropic has no seed",
    "logprobs": "Anthropic returns no log-probabilities",
}

# Anthropic's stop reasons in the words the other backends use; others pass unchanged.
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


class AnthropicMessages(Backend):
    """Claude through the Messages API, streamed (SSE) or not."""

    name = "anthropic"

    def __init__(
        self,
        base_url: str = "https://api.anthropic.com",
        *,
        api_key: str | None = None,
        model: str | None = None,
        version: str = API_VERSION,
        stream: bool = True,
        max_concurrency: int = 16,
        options: HttpOptions | None = None,
        headers: Mapping[str, str] | None = None,
        capabilities: Capabilities | Mapping[str, Any] | None = None,
    ) -> None:
        """
        base_url: `https://api.anthropic.com`, with or without the trailing `/v1`.
        model: used when a request names none.
        stream: stream by default; `request.extra["stream"]` overrides per request.
        max_concurrency: most requests in flight for one call with n > 1.
        headers: extra headers, e.g. `{"anthropic-beta": "..."}`.
        capabilities: a Capabilities, or field overrides (`{"prefill": False}` for
            models from 4.6 on, which reject a final assistant message).
        """
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.path = "/messages" if self.base_url.endswith("/v1") else "/v1/messages"
        self.model = model
        self.streaming = stream
        self.max_concurrency = max_concurrency
        defaults = Capabilities(chat=True, prefill=True)
        if isinstance(capabilities, Capabilities):
            self.capabilities = capabilities
        else:
            self.capabilities = dataclasses.replace(defaults, **dict(capabilities or {}))
        auth = {"x-api-key": api_key} if api_key else {}
        self._endpoint = Endpoint(
            self.name,
            self.base_url,
            headers={"anthropic-version": version, **(headers or {}), **auth},
            options=options,
            secrets=[api_key],
        )

    def __repr__(self) -> str:
        return f"AnthropicMessages({self._endpoint.display_url!r})"

    async def aclose(self) -> None:
        await self._endpoint.aclose()

    # -- parameters -------------------------------------------------------------

    def wire_params(self, request: GenRequest) -> WireParams:
        wp = WireParams(body={})
        for name, value in request.params.items():
            if value is None or (name == "logprobs" and value is False):
                continue
            if name not in WIRE_NAMES:
                wp.dropped[name] = (
                    "not a parameter loom knows for anthropic; put it in extra to send it as is"
                )
                continue
            wire = WIRE_NAMES[name]
            if wire is None:
                wp.dropped[name] = _WHY_NOT.get(name, f"Anthropic Messages has no {name}")
                continue
            if name == "temperature" and isinstance(value, int | float) and value > 1:
                wp.dropped[name] = f"Anthropic's temperature ends at 1; sent 1 instead of {value}"
                value = 1.0
            if name == "stop" and isinstance(value, str):
                value = [value]
            wp.body[wire] = value
            if wire != name:
                wp.renamed[name] = wire
        wp.body.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
        if request.n > 1:
            wp.dropped["n"] = f"Anthropic has no n: sent as {request.n} concurrent requests"
        _, _, stripped = _split_messages(request.messages or [])
        if stripped:
            wp.dropped["prefill_trailing_whitespace"] = (
                f"stripped {stripped!r} from the end of the assistant prefill "
                "(Anthropic rejects it); the reply continues the stripped prefill"
            )
        return wp

    # -- requests -----------------------------------------------------------------

    async def stream(self, request: GenRequest) -> AsyncGenerator[Chunk, None]:
        if request.messages is None:
            raise BackendError("anthropic: needs request.messages (it has no raw-prompt endpoint)")
        if request.n < 1:
            raise BackendError(f"anthropic: n must be at least 1, got {request.n}")
        model = request.model or self.model
        if not model:
            raise BackendError("anthropic: no model given (request.model or model=...)")
        system, messages, _ = _split_messages(request.messages)
        body: dict[str, Any] = {"model": model, "messages": messages}
        if system is not None:
            body["system"] = system
        body.update(self.wire_params(request).body)
        streaming = bool(request.extra.get("stream", self.streaming))
        if streaming:
            body["stream"] = True
        body.update((k, v) for k, v in request.extra.items() if k != "stream")
        if request.n == 1:
            runs = self._retrying(body, streaming)
        else:
            slots = asyncio.Semaphore(self.max_concurrency)
            branch = partial(self._limited, slots, body, streaming)
            runs = fan_out([branch] * request.n)
        async with aclosing(runs) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _limited(
        self, slots: asyncio.Semaphore, body: dict[str, Any], streaming: bool
    ) -> AsyncGenerator[Chunk, None]:
        async with slots, aclosing(self._retrying(body, streaming)) as chunks:
            async for chunk in chunks:
                yield chunk

    def _retrying(self, body: dict[str, Any], streaming: bool) -> AsyncGenerator[Chunk, None]:
        attempt = self._streamed if streaming else self._whole
        return self._endpoint.retrying(lambda: attempt(body))

    async def _whole(self, body: dict[str, Any]) -> AsyncGenerator[Chunk, None]:
        payload = await self._endpoint.post_json(self.path, body)
        if not isinstance(payload, dict):
            raise self._endpoint.malformed("the response", "expected an object")
        if payload.get("type") == "error" or payload.get("error"):
            raise self._endpoint.inband_error(payload)
        content = payload.get("content")
        if not isinstance(content, list):
            raise self._endpoint.malformed("the response", "no content")
        text = "".join(
            block.get("text", "")
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        )
        usage = payload.get("usage")
        role = payload.get("role")
        yield Chunk(
            index=0,
            text=text,
            role=role if isinstance(role, str) else None,
            finish_reason=_finish(payload.get("stop_reason")),
            usage=dict(usage) if isinstance(usage, dict) else None,
            model=payload.get("model"),
        )

    async def _streamed(self, body: dict[str, Any]) -> AsyncGenerator[Chunk, None]:
        model: str | None = None
        role: str | None = None
        usage: dict[str, Any] = {}
        stop: str | None = None
        done = False
        async with aclosing(self._endpoint.events(self.path, body, last=_is_stop)) as events:
            async for event in events:
                payload = self._endpoint.parse_event(event)
                kind = payload.get("type", event.event)
                if kind == "content_block_delta":
                    delta = payload.get("delta")
                    # Only text is continuation; thinking and tool deltas are not.
                    if isinstance(delta, dict) and delta.get("type") == "text_delta":
                        text = delta.get("text")
                        if isinstance(text, str) and text:
                            yield Chunk(index=0, text=text, model=model, role=role)
                            role = None
                elif kind == "message_start":
                    message = payload.get("message")
                    if isinstance(message, dict):
                        model = message.get("model") or model
                        if isinstance(message.get("role"), str):
                            role = message["role"]  # goes out with the first text
                        if isinstance(message.get("usage"), dict):
                            usage.update(message["usage"])
                elif kind == "message_delta":
                    delta = payload.get("delta")
                    if isinstance(delta, dict):
                        stop = delta.get("stop_reason") or stop
                    if isinstance(payload.get("usage"), dict):
                        usage.update(payload["usage"])  # output_tokens is cumulative
                elif kind == "message_stop":
                    done = True
                    break
                elif kind == "error":
                    raise self._endpoint.inband_error(payload)
        if not done:
            raise self._endpoint.error(
                f"stream from {self._endpoint.display_url} ended before message_stop",
                cls=StreamCut,
                retryable=True,  # a retry is safe only while nothing was yielded
            )
        yield Chunk(index=0, finish_reason=_finish(stop), usage=usage or None, model=model)


def _finish(stop_reason: Any) -> str:
    if not isinstance(stop_reason, str) or not stop_reason:
        return "unknown"
    return _FINISH.get(stop_reason, stop_reason)


def _split_messages(
    messages: list[dict[str, str]],
) -> tuple[str | None, list[dict[str, str]], str]:
    """(top-level system, the other messages, whitespace stripped off the prefill).

    Anthropic takes the system prompt as a field, not a message, and rejects a final
    assistant message that ends in whitespace (or is empty once stripped).
    """
    systems = [m["content"] for m in messages if m.get("role") == "system"]
    rest = [
        {"role": m["role"], "content": m["content"]} for m in messages if m.get("role") != "system"
    ]
    stripped = ""
    if rest and rest[-1]["role"] == "assistant":
        content = rest[-1]["content"]
        kept = content.rstrip()
        stripped = content[len(kept) :]
        if kept:
            rest[-1]["content"] = kept
        else:
            rest.pop()
    return ("\n\n".join(systems) if systems else None), rest, stripped


def _is_stop(event: ServerEvent) -> bool:
    return event.event == "message_stop"
