"""The OpenAI wire format `loom serve` speaks: requests in, loom's values out, and back.

Pure functions, no I/O: `parse_completion` and `parse_chat` turn a request body into an
`Ask` (loom's contexts, model and canonical parameters), or raise `ApiError` in
OpenAI's error shape; `choice`, `chunk`, `response` and `logprobs` build the answers.
Sampler fields loom knows by name (`top_k`, `min_p`, `repetition_penalty`…) are taken
as they are; `emulate` and `presets` are loom's own additions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from loom.errors import LoomError
from loom.generation.backends.base import Token
from loom.generation.context import Context, Message

MAX_N = 16  # choices per prompt, as OpenAI allows at most 128 and loom's engine groups 16
MAX_PROMPTS = 16
COMPLETIONS = "completions"
CHAT = "chat"
# Fields a client may send that change nothing loom does.
IGNORED = frozenset(
    {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key"}
)
# Fields that ask for something loom cannot do: refused rather than silently dropped.
UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "audio", "modalities")
FINISH_REASONS = frozenset({"stop", "length", "content_filter"})


class ApiError(Exception):
    """An error answered in OpenAI's shape: `{"error": {message, type, param, code}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def invalid(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


@dataclass(frozen=True)
class Ask:
    """One request, in loom's terms: what to continue, with which model, how."""

    endpoint: str  # "completions" | "chat"
    model: str  # the loom model name
    contexts: tuple[Context, ...]  # one per prompt (a chat request has one)
    n: int
    params: Mapping[str, Any] = field(default_factory=dict)  # canonical names
    stream: bool = False
    include_usage: bool = False
    logprobs: int | None = None  # alternatives per token the client asked to see
    echo: bool = False
    emulate: str = "auto"
    presets: tuple[str, ...] = ()


def parse_completion(body: Any, models: Sequence[str], default: str) -> Ask:
    """A `POST /v1/completions` body as an `Ask`."""
    body = _object(body)
    _refuse_unsupported(body)
    prompts = _prompts(body.get("prompt"))
    if body.get("suffix") not in (None, ""):
        raise invalid(
            "suffix (insertion) is not supported: send the text before it as the prompt", "suffix"
        )
    n = _count(body, "n", MAX_N)
    best_of = body.get("best_of")
    if best_of not in (None, n):
        raise invalid(
            "best_of is not supported: loom returns every choice it makes (use n)", "best_of"
        )
    logprobs = body.get("logprobs")
    if logprobs is not None and not (_whole(logprobs) and 0 <= logprobs <= 20):
        raise invalid("logprobs must be a whole number from 0 to 20", "logprobs")
    params = _params(body, skip={"logprobs"})
    if logprobs is not None:
        params["logprobs"] = max(1, logprobs)
    return Ask(
        COMPLETIONS,
        _model(body, models, default),
        tuple(Context.of_text(p) for p in prompts),
        n,
        params,
        stream=_flag(body, "stream"),
        include_usage=_include_usage(body),
        logprobs=logprobs,
        echo=_flag(body, "echo"),
        emulate=_emulate(body),
        presets=_presets(body),
    )


def parse_chat(body: Any, models: Sequence[str], default: str) -> Ask:
    """A `POST /v1/chat/completions` body as an `Ask` (one conversation)."""
    body = _object(body)
    _refuse_unsupported(body)
    format_ = body.get("response_format")
    if format_ not in (None, {"type": "text"}):
        raise invalid("response_format is not supported: only text replies", "response_format")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages must be a non-empty list of {role, content}", "messages")
    turns = [_message(m, i) for i, m in enumerate(messages)]
    context = Context.of_messages(turns)
    if not context.messages:
        raise invalid("messages holds only system messages: nothing to reply to", "messages")
    n = _count(body, "n", MAX_N)
    wants = body.get("logprobs")
    if wants not in (None, True, False):
        raise invalid("logprobs must be true or false", "logprobs")
    top = body.get("top_logprobs")
    if top is not None and not (_whole(top) and 0 <= top <= 20):
        raise invalid("top_logprobs must be a whole number from 0 to 20", "top_logprobs")
    params = _params(body, skip={"logprobs", "top_logprobs"})
    logprobs = (top or 0) if wants else None
    if logprobs is not None:
        params["logprobs"] = max(1, logprobs)
    return Ask(
        CHAT,
        _model(body, models, default),
        (context,),
        n,
        params,
        stream=_flag(body, "stream"),
        include_usage=_include_usage(body),
        logprobs=logprobs,
        emulate=_emulate(body),
        presets=_presets(body),
    )


# ---- reading a body ---------------------------------------------------------------------


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    return body


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    for name in UNSUPPORTED:
        if body.get(name) not in (None, [], {}):
            raise invalid(f"{name} is not supported by loom serve", name)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(body: Mapping[str, Any], name: str, high: int) -> int:
    value = body.get(name)
    if value is None:
        return 1
    if not _whole(value) or not 1 <= value <= high:
        raise invalid(f"{name} must be a whole number from 1 to {high}", name)
    return int(value)


def _flag(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name)
    if value not in (None, True, False):
        raise invalid(f"{name} must be true or false", name)
    return bool(value)


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise invalid("stream_options must be an object", "stream_options")
    return bool(options.get("include_usage"))


def _prompts(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) > MAX_PROMPTS:
            raise invalid(f"at most {MAX_PROMPTS} prompts per request", "prompt")
        return list(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(p, int | list) for p in prompt):
        raise invalid("token-id prompts are not supported: send text", "prompt")
    raise invalid("prompt must be a string or a list of strings", "prompt")


def _message(item: Any, index: int) -> Message:
    param = f"messages[{index}]"
    if not isinstance(item, dict):
        raise invalid("each message must be an object with a role and content", param)
    role = item.get("role")
    if role == "developer":
        role = "system"  # OpenAI's newer name for the system message
    if role not in ("system", "user", "assistant"):
        raise invalid(f"role must be system, user or assistant, got {role!r}", f"{param}.role")
    content = item.get("content")
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise invalid("only text content parts are supported", f"{param}.content")
            parts.append(str(part.get("text", "")))
        content = "".join(parts)
    if not isinstance(content, str):
        raise invalid("content must be text", f"{param}.content")
    return Message(role, content)


def _model(body: Mapping[str, Any], models: Sequence[str], default: str) -> str:
    name = body.get("model")
    if name is None or name == "":
        return default
    if not isinstance(name, str):
        raise invalid("model must be a string", "model")
    if name not in models:
        raise ApiError(
            404,
            f"The model {name!r} does not exist on this server (it serves: {', '.join(models)})",
            param="model",
            code="model_not_found",
        )
    return name


def _emulate(body: Mapping[str, Any]) -> str:
    from loom.generation.request import EMULATION_CHOICES

    value = body.get("emulate", "auto")
    if value not in EMULATION_CHOICES:
        raise invalid(f"emulate must be one of {', '.join(EMULATION_CHOICES)}", "emulate")
    return str(value)


def _presets(body: Mapping[str, Any]) -> tuple[str, ...]:
    value = body.get("presets")
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid("presets must be a preset name or a list of them", "presets")
    return tuple(value)


def _params(body: Mapping[str, Any], *, skip: set[str]) -> dict[str, Any]:
    """The sampler fields of `body` loom knows, validated, under their canonical names."""
    from loom.sampling.params import ALIASES, PARAMS, validate

    given = {}
    for key, value in body.items():
        if key in skip or key == "n" or value is None:
            continue
        name = ALIASES.get(key, key)
        if name in PARAMS:
            given[key] = value
    try:
        return validate(given)
    except LoomError as exc:
        param = next((k for k in given if k in exc.message), None)
        raise invalid(exc.message, param) from None


# ---- answers --------------------------------------------------------------------------------


def finish_reason(reason: str | None, *, incomplete: bool = False) -> str:
    """A provider's finish reason in OpenAI's words (a cut-off branch stopped short: length)."""
    if incomplete:
        return "length"
    if reason in FINISH_REASONS:
        return str(reason)
    if reason in ("max_tokens", "max_output_tokens"):
        return "length"
    return "stop"


def logprobs(
    endpoint: str, tokens: Sequence[Token], top: int, offset: int = 0
) -> dict[str, Any] | None:
    """Token log-probabilities in the endpoint's shape (`top` alternatives per token)."""
    if not tokens:
        return None
    if endpoint == CHAT:
        return {
            "content": [
                {
                    "token": t.text,
                    "logprob": t.logprob,
                    "bytes": list(t.text.encode()),
                    "top_logprobs": [
                        {"token": alt, "logprob": lp, "bytes": list(alt.encode())}
                        for alt, lp in t.top[:top]
                    ],
                }
                for t in tokens
            ],
            "refusal": None,
        }
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.text)
    return {
        "tokens": [t.text for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [dict(t.top[:top]) if top else None for t in tokens],
        "text_offset": offsets,
    }


def choice(
    endpoint: str,
    index: int,
    text: str,
    finish: str | None,
    probs: dict[str, Any] | None = None,
    *,
    delta: bool = False,
    first: bool = False,
) -> dict[str, Any]:
    """One choice of an answer (`delta`: of a streamed chunk; `first`: carries the role)."""
    if endpoint == COMPLETIONS:
        return {"index": index, "text": text, "logprobs": probs, "finish_reason": finish}
    if delta:
        message: dict[str, Any] = {"content": text} if text or not finish else {}
        if first:
            message = {"role": "assistant", **message}
        return {"index": index, "delta": message, "logprobs": probs, "finish_reason": finish}
    return {
        "index": index,
        "message": {"role": "assistant", "content": text, "refusal": None},
        "logprobs": probs,
        "finish_reason": finish,
    }


def envelope(endpoint: str, rid: str, created: int, model: str, *, chunk: bool) -> dict[str, Any]:
    kind = "chat.completion" if endpoint == CHAT else "text_completion"
    if chunk and endpoint == CHAT:
        kind += ".chunk"
    return {"id": rid, "object": kind, "created": created, "model": model}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
