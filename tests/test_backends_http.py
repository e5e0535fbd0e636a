"""The HTTP backends against a real local server (tests/fakeprovider.py): no mocked clients."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import pytest

from loom.errors import BackendError, StreamCut
from loom.generation.backends.anthropic import AnthropicMessages
from loom.generation.backends.base import Backend, Chunk, GenRequest, Token
from loom.generation.backends.http import (
    HttpOptions,
    ServerEvent,
    SSEDecoder,
    parse_retry_after,
    provider_message,
    safe_url,
)
from loom.generation.backends.openai_compat import OpenAIChat, OpenAICompletions

from fakeprovider import (
    ANTHROPIC_PREFILL_REJECTED,
    ANTHROPIC_TEMPERATURE_DEPRECATED,
    Drop,
    Fail,
    FakeProvider,
    Hang,
    Reply,
    openai_error,
    tokenize,
)

# Tiny backoff keeps the suite fast; Retry-After tests still wait what the server says.
FAST = HttpOptions(
    connect_timeout=2, read_timeout=2, max_retries=2, backoff_base=0.01, backoff_max=0.05
)
KEY = "sk-test-0123456789abcdef"
USER = [{"role": "user", "content": "Tell me about rivers."}]


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as server:
        yield server


@dataclass
class Result:
    chunks: list[Chunk] = field(default_factory=list)
    error: BackendError | None = None

    def text(self, index: int = 0) -> str:
        return "".join(c.text for c in self.chunks if c.index == index)

    def tokens(self, index: int = 0) -> list[Token]:
        return [t for c in self.chunks if c.index == index for t in c.tokens or ()]

    def finish(self, index: int = 0) -> list[str]:
        return [c.finish_reason for c in self.chunks if c.index == index and c.finish_reason]

    @property
    def usages(self) -> list[dict[str, Any]]:
        return [c.usage for c in self.chunks if c.usage]


def collect(backend: Backend, request: GenRequest) -> Result:
    """Run one request to the end in a fresh event loop; capture chunks and the error."""

    async def go() -> Result:
        result = Result()
        try:
            async with aclosing(backend.stream(request)) as chunks:  # type: ignore[type-var]
                async for chunk in chunks:
                    result.chunks.append(chunk)
        except BackendError as exc:
            result.error = exc
        finally:
            await backend.aclose()
        return result

    return asyncio.run(go())


def completions(fake: FakeProvider, **kw: Any) -> OpenAICompletions:
    kw.setdefault("options", FAST)
    return OpenAICompletions(fake.openai_url, api_key=KEY, model="base-1", **kw)


def chat(fake: FakeProvider, **kw: Any) -> OpenAIChat:
    kw.setdefault("options", FAST)
    return OpenAIChat(fake.openai_url, api_key=KEY, model="chat-1", **kw)


def claude(fake: FakeProvider, **kw: Any) -> AnthropicMessages:
    kw.setdefault("options", FAST)
    return AnthropicMessages(fake.anthropic_url, api_key=KEY, model="claude-x", **kw)


def prompt(text: str = "Once upon a time", n: int = 1, **params: Any) -> GenRequest:
    return GenRequest(model="", prompt=text, n=n, params=params)


def messages(msgs: list[dict[str, str]] = USER, n: int = 1, **params: Any) -> GenRequest:
    return GenRequest(model="", messages=msgs, n=n, params=params)


# ---------------------------------------------------------------------------
# OpenAI completions and chat: the happy paths


def test_completions_stream_text_finish_usage_model_and_request_shape() -> None:
    """A streamed completion arrives whole, with finish reason, usage and the reported model."""
    with FakeProvider(reported_model="base-1-2026-01", api_key=KEY) as fake:
        fake.script(Reply("The river bends past stone."))
        result = collect(completions(fake), prompt())
        sent = fake.last
    assert result.error is None
    assert result.text() == "The river bends past stone."
    assert result.finish() == ["stop"]
    assert result.chunks[-1].finish_reason == "stop"
    assert result.usages == [result.chunks[-1].usage]
    usage = result.usages[0]
    assert usage["output_tokens"] == usage["completion_tokens"] == 5
    assert usage["input_tokens"] == usage["prompt_tokens"] == len(tokenize("Once upon a time"))
    assert {c.model for c in result.chunks} == {"base-1-2026-01"}
    assert sent.path == "/v1/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["user-agent"].startswith("loom")
    assert sent.body == {
        "model": "base-1",
        "prompt": "Once upon a time",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_completions_not_streamed_by_backend_option_or_per_request() -> None:
    """stream=False (backend) or extra={"stream": False} (request) both still yield Chunks."""
    with FakeProvider() as fake:
        fake.script(Reply(["one two", "three"]), Reply("four five"))
        whole = collect(completions(fake, stream=False), prompt(n=2))
        per_request = collect(
            completions(fake), GenRequest(model="", prompt="x", extra={"stream": False})
        )
        bodies = [r.body for r in fake.requests]
    assert whole.error is None and per_request.error is None
    assert [whole.text(0), whole.text(1)] == ["one two", "three"]
    assert whole.finish(0) == whole.finish(1) == ["stop"]
    assert whole.chunks[-1].usage is not None and whole.chunks[-1].usage["output_tokens"] == 3
    assert per_request.text() == "four five"
    assert all("stream" not in b and "stream_options" not in b for b in bodies)
    assert bodies[0]["n"] == 2


def test_n_branches_stream_interleaved_and_route_by_choice_index() -> None:
    """n>1 in one request: chunks arrive interleaved; each branch has its own text and finish."""
    texts = ["alpha beta gamma delta", "one two", "x y z"]
    with FakeProvider() as fake:
        fake.script(Reply(texts))
        result = collect(completions(fake), prompt(n=3))
        assert fake.last.body["n"] == 3
    assert result.error is None
    assert [result.text(i) for i in range(3)] == texts
    order = [c.index for c in result.chunks if c.text]
    assert order[:3] == [0, 1, 2]  # round-robin, not one branch after another
    for i in range(3):
        branch = [c for c in result.chunks if c.index == i]
        assert result.finish(i) == ["stop"]
        assert branch[-1].finish_reason == "stop"  # finish is each branch's last chunk
    assert len(result.usages) == 1 and result.chunks[-1].usage is not None


def test_legacy_logprobs_map_to_tokens() -> None:
    """Completions' parallel arrays (tokens / token_logprobs / top_logprobs) become Tokens."""
    with FakeProvider() as fake:
        fake.script(Reply(["a b c", "d e"]))
        result = collect(completions(fake), prompt(n=2, logprobs=3))
        assert fake.last.body["logprobs"] == 3
    for index, text in enumerate(["a b c", "d e"]):
        tokens = result.tokens(index)
        assert "".join(t.text for t in tokens) == text
        for token in tokens:
            assert token.logprob < 0
            assert len(token.top) == 3
            assert token.top[0] == (token.text, token.logprob)
            assert [lp for _, lp in token.top] == sorted((lp for _, lp in token.top), reverse=True)


def test_chat_shaped_logprobs_on_completions_as_llama_cpp_sends_them() -> None:
    with FakeProvider(logprobs_shape="chat") as fake:
        fake.script(Reply("red green blue"))
        result = collect(completions(fake), prompt(logprobs=2))
    tokens = result.tokens()
    assert [t.text for t in tokens] == ["red", " green", " blue"]
    assert all(len(t.top) == 2 and t.top[0][0] == t.text for t in tokens)


def test_chat_stream_with_logprobs_n_and_usage() -> None:
    """Chat: messages in, `logprobs: true` + `top_logprobs: k` on the wire, Tokens out."""
    with FakeProvider(reported_model="chat-1-0613") as fake:
        fake.script(Reply(["Rivers flow", "Water runs downhill"]))
        result = collect(chat(fake), messages(n=2, logprobs=2, temperature=0.7))
        sent = fake.last
    assert result.error is None
    assert sent.path == "/v1/chat/completions"
    assert sent.body["messages"] == USER
    assert sent.body["logprobs"] is True and sent.body["top_logprobs"] == 2
    assert sent.body["temperature"] == 0.7 and sent.body["n"] == 2
    assert [result.text(0), result.text(1)] == ["Rivers flow", "Water runs downhill"]
    assert [t.text for t in result.tokens(1)] == ["Water", " runs", " downhill"]
    assert all(len(t.top) == 2 for t in result.tokens(0))
    assert result.chunks[-1].usage is not None
    assert result.chunks[-1].usage["output_tokens"] == 5
    assert {c.model for c in result.chunks} == {"chat-1-0613"}


def test_chat_not_streamed_with_logprobs() -> None:
    with FakeProvider() as fake:
        fake.script(Reply(["Yes.", "No, never."]))
        result = collect(chat(fake, stream=False), messages(n=2, logprobs=True))
        assert fake.last.body["logprobs"] is True and "top_logprobs" not in fake.last.body
    assert [result.text(0), result.text(1)] == ["Yes.", "No, never."]
    assert [t.text for t in result.tokens(1)] == ["No,", " never."]
    assert result.finish(0) == result.finish(1) == ["stop"]


def test_max_tokens_gives_length_finish_reason() -> None:
    with FakeProvider() as fake:
        fake.script(Reply("one two three four five"))
        result = collect(completions(fake), prompt(max_tokens=2))
    assert result.text() == "one two"
    assert result.finish() == ["length"]


def test_backend_without_n_fans_out_with_shifted_seeds() -> None:
    """capabilities n=False (e.g. OpenRouter): N requests, seed+i each, merged by index."""
    with FakeProvider(chunk_delay=0.01) as fake:
        fake.script(Reply("same"), Reply("same"), Reply("same"))
        backend = completions(fake, capabilities={"n": False})
        request = prompt(n=3, seed=7)
        assert "n" in backend.wire_params(request).dropped
        result = collect(backend, request)
        bodies = [r.body for r in fake.requests]
    assert result.error is None
    assert [result.text(i) for i in range(3)] == ["same"] * 3
    assert all("n" not in b for b in bodies)
    assert sorted(b["seed"] for b in bodies) == [7, 8, 9]


def test_one_backend_serves_several_event_loops() -> None:
    """A library caller may asyncio.run() twice with the same backend object."""
    with FakeProvider() as fake:
        backend = completions(fake)
        first = collect(backend, prompt())
        second = collect(backend, prompt())
    assert first.error is None and second.error is None


@pytest.mark.parametrize("make", [completions, chat, claude], ids=["completions", "chat", "claude"])
def test_streamed_answers_share_one_connection(make: Any) -> None:
    """After a stream's last event the connection goes back to the pool: one handshake
    (TLS, with a real provider) for a whole session, not one per generation."""
    with FakeProvider() as fake:
        backend = make(fake)
        request = prompt() if make is completions else messages()

        async def twice() -> list[Result]:
            results = []
            for _ in range(3):
                result = Result()
                async with aclosing(backend.stream(request)) as chunks:
                    result.chunks.extend([c async for c in chunks])
                results.append(result)
            await backend.aclose()
            return results

        results = asyncio.run(twice())
        clients = {r.client for r in fake.requests}
    assert all(r.text() and r.finish() for r in results)
    assert len(fake.requests) == 3 and len(clients) == 1, clients


def test_a_server_slow_to_end_a_finished_stream_is_cut_not_waited_for() -> None:
    """The last event is all a generation needs: a body that lingers is not read to its end."""
    with FakeProvider() as fake:
        fake.linger = 5.0
        backend = completions(fake)

        async def twice() -> list[Result]:
            results = [Result(), Result()]
            for result in results:
                async with aclosing(backend.stream(prompt())) as chunks:
                    result.chunks.extend([c async for c in chunks])
            await backend.aclose()
            return results

        results = asyncio.run(twice())
        clients = {r.client for r in fake.requests}
    assert all(r.text() and r.finish() and r.error is None for r in results)
    assert len(clients) == 2  # each lingering connection was closed, not waited for


# ---------------------------------------------------------------------------
# wire_params: the mapping tables


def test_wire_params_generic_passes_extended_samplers() -> None:
    backend = OpenAICompletions("http://127.0.0.1:9/v1", model="m")
    assert backend.dialect == "generic"
    params: dict[str, Any] = {
        "temperature": 0.8,
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "typical_p": 0.95,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "repetition_penalty": 1.1,
        "seed": 3,
        "max_tokens": 64,
        "stop": ["\n\n"],
        "logit_bias": {50256: -100},
        "logprobs": 5,
        "mirostat": 2,
        "top_a": None,
    }
    wp = backend.wire_params(prompt(n=2, **params))
    expected = {k: v for k, v in params.items() if k not in ("mirostat", "top_a")}
    assert wp.body == {**expected, "n": 2}
    assert set(wp.dropped) == {"mirostat"}
    assert "extra" in wp.dropped["mirostat"]
    assert wp.renamed == {}


def test_wire_params_official_openai_drops_and_caps() -> None:
    backend = OpenAICompletions(model="davinci-002")  # api.openai.com: detected
    assert backend.dialect == "openai"
    assert backend.capabilities.max_top_logprobs == 5
    wp = backend.wire_params(
        prompt(top_k=40, min_p=0.1, repetition_penalty=1.2, stop=list("abcdef"), logprobs=10)
    )
    assert wp.body == {"stop": ["a", "b", "c", "d"], "logprobs": 5}
    assert set(wp.dropped) == {"top_k", "min_p", "repetition_penalty", "stop", "logprobs"}
    assert "['e', 'f']" in wp.dropped["stop"]
    assert "5" in wp.dropped["logprobs"]

    chat_backend = OpenAIChat(model="gpt-x")
    wp = chat_backend.wire_params(messages(max_tokens=100, logprobs=3))
    assert wp.body == {"max_completion_tokens": 100, "logprobs": True, "top_logprobs": 3}
    assert wp.renamed == {"max_tokens": "max_completion_tokens", "logprobs": "top_logprobs"}


def test_wire_params_generic_chat_and_llama_cpp_names() -> None:
    wp = OpenAIChat("http://h/v1").wire_params(messages(max_tokens=10, repetition_penalty=1.1))
    assert wp.body == {"max_tokens": 10, "repetition_penalty": 1.1}
    llama = OpenAICompletions("http://h/v1", dialect="llama.cpp")
    wp = llama.wire_params(prompt(repetition_penalty=1.1, logprobs=0))
    assert wp.body == {"repeat_penalty": 1.1, "logprobs": 0}
    assert wp.renamed == {"repetition_penalty": "repeat_penalty"}


def test_wire_params_capability_overrides() -> None:
    backend = OpenAIChat("http://h/v1", capabilities={"logprobs": False, "seed": False})
    wp = backend.wire_params(messages(logprobs=2, seed=1, temperature=1.0))
    assert wp.body == {"temperature": 1.0}
    assert set(wp.dropped) == {"logprobs", "seed"}


def test_anthropic_wire_params_drop_with_reasons() -> None:
    backend = AnthropicMessages(model="claude-x")
    request = messages(
        [*USER, {"role": "assistant", "content": "Rivers are \n"}],
        n=3,
        temperature=1.4,
        top_k=20,
        stop="END",
        seed=1,
        logprobs=2,
        min_p=0.1,
        presence_penalty=0.5,
        logit_bias={1: 2},
    )
    wp = backend.wire_params(request)
    assert wp.body == {
        "temperature": 1.0,
        "top_k": 20,
        "stop_sequences": ["END"],
        "max_tokens": 256,
    }
    assert wp.renamed == {"stop": "stop_sequences"}
    assert "seed" in wp.dropped["seed"].lower()
    assert "log-probabilities" in wp.dropped["logprobs"]
    assert set(wp.dropped) >= {"min_p", "presence_penalty", "logit_bias", "n", "temperature"}
    assert wp.dropped["prefill_trailing_whitespace"].startswith("stripped ' \\n' from the end")
    caps = backend.capabilities
    assert caps.chat and caps.prefill and not (caps.n or caps.seed or caps.logprobs)


# ---------------------------------------------------------------------------
# Retries


def test_429_waits_for_retry_after_then_succeeds() -> None:
    with FakeProvider() as fake:
        fake.script(Fail(429, retry_after="1"), Reply("patience"))
        result = collect(completions(fake), prompt())
        first, second = fake.requests
    assert result.error is None and result.text() == "patience"
    assert second.time - first.time >= 1.0


def test_retry_after_beyond_the_cap_fails_at_once() -> None:
    with FakeProvider() as fake:
        fake.script(Fail(429, retry_after="3600"))
        result = collect(completions(fake, options=FAST), prompt())
        assert len(fake.requests) == 1
    err = result.error
    assert err is not None and err.status == 429 and err.retryable
    assert err.retry_after == 3600
    assert "429 Too Many Requests" in err.message and "Rate limit reached" in err.message


def test_5xx_are_retried_with_backoff_then_succeed() -> None:
    with FakeProvider() as fake:
        fake.script(Fail(500), Fail(503), Reply("third time"))
        result = collect(chat(fake), messages())
        times = [r.time for r in fake.requests]
    assert result.error is None and result.text() == "third time"
    assert len(times) == 3 and times == sorted(times)


def test_retry_exhaustion_is_one_clean_backend_error() -> None:
    with FakeProvider() as fake:
        fake.script(Fail(503), Fail(503), Fail(503), Reply("never"))
        result = collect(completions(fake), prompt())
        assert len(fake.requests) == 3 and fake.pending == 1
        url = fake.openai_url
    err = result.error
    assert err is not None and not isinstance(err, StreamCut)
    assert err.message == (
        f"openai: 503 Service Unavailable from {url}: The engine is currently overloaded, "
        "please try again later. (gave up after 3 attempts)"
    )
    assert err.status == 503 and err.details["attempts"] == 3
    assert err.details["error_type"] == "server_error"
    assert "\n" not in err.message


def test_dropped_connection_is_retried() -> None:
    with FakeProvider() as fake:
        fake.script(Drop(), Reply("back"))
        result = collect(completions(fake), prompt())
        assert len(fake.requests) == 2
    assert result.error is None and result.text() == "back"


def test_read_timeout_is_retried_then_reported() -> None:
    quick = HttpOptions(read_timeout=0.3, max_retries=1, backoff_base=0.01, backoff_max=0.02)
    with FakeProvider() as fake:
        fake.script(Hang(2), Reply("awake"), Hang(2), Hang(2))
        ok = collect(completions(fake, options=quick), prompt())
        failed = collect(completions(fake, options=quick), prompt())
        assert len(fake.requests) == 4
    assert ok.error is None and ok.text() == "awake"
    err = failed.error
    assert err is not None and err.retryable
    assert "no data from" in err.message and "0.3s" in err.message
    assert "gave up after 2 attempts" in err.message


def test_connection_refused_is_a_clean_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = HttpOptions(max_retries=1, backoff_base=0.01, backoff_max=0.02)
    backend = OpenAICompletions(f"http://127.0.0.1:{port}/v1", api_key=KEY, options=options)
    result = collect(backend, GenRequest(model="m", prompt="x"))
    err = result.error
    assert err is not None
    assert err.message.startswith(f"openai: cannot connect to http://127.0.0.1:{port}/v1")
    assert KEY not in err.message


@pytest.mark.parametrize(
    ("url", "shown", "why"),
    [
        ("ftp://user:pw@host/v1", "ftp://host/v1", "unsupported protocol"),
        ("user:pw@127.0.0.1:9/v1", "127.0.0.1:9/v1", "missing an 'http://'"),
        ("http://ho\tst/v1", "http://host/v1", "non-printable"),  # urlsplit drops the tab
    ],
)
@pytest.mark.parametrize("stream", [True, False])
def test_an_invalid_url_fails_at_once_naming_it_without_credentials(
    url: str, shown: str, why: str, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    options = HttpOptions(max_retries=2, backoff_base=0.01, backoff_max=0.02)
    backend = OpenAICompletions(url, api_key=KEY, model="m", options=options, stream=stream)
    with caplog.at_level("INFO", logger="loom.generation.backends.http"):
        result = collect(backend, GenRequest(model="m", prompt="x"))
    err = result.error
    assert err is not None and not err.retryable and "attempts" not in err.details
    assert err.message.startswith(f"openai: invalid URL {shown}: ") and why in err.message
    assert "\n" not in err.message and "pw" not in err.message and KEY not in err.message
    assert "retrying" not in caplog.text


def test_safe_url_finds_credentials_in_a_url_without_a_scheme() -> None:
    assert safe_url("user:pw@host:8080/v1?key=abc") == "host:8080/v1"
    assert safe_url("localhost:8080/v1") == "localhost:8080/v1"


def test_400_is_not_retried_and_carries_the_provider_message() -> None:
    body = openai_error("Invalid value for 'temperature'.", param="temperature", code="bad")
    with FakeProvider() as fake:
        fake.script(Fail(400, body=body))
        result = collect(completions(fake), prompt(temperature=9))
        assert len(fake.requests) == 1
        url = fake.openai_url
    err = result.error
    assert err is not None and not err.retryable and err.status == 400
    assert err.message == f"openai: 400 Bad Request from {url}: Invalid value for 'temperature'."
    assert err.details["error_type"] == "invalid_request_error"


def test_401_names_the_problem_without_leaking_the_key() -> None:
    wrong = "sk-wrong-SECRET-0123456789"
    with FakeProvider(api_key=KEY) as fake:
        backend = OpenAICompletions(fake.openai_url, api_key=wrong, model="m", options=FAST)
        result = collect(backend, prompt())
        assert len(fake.requests) == 1
        assert fake.last.headers["authorization"] == f"Bearer {wrong}"  # it was sent
        url = fake.openai_url
    err = result.error
    assert err is not None and err.status == 401 and not err.retryable
    assert err.message.startswith(f"openai: 401 Unauthorized from {url}: Incorrect API key")
    for surface in (err.message, str(err), repr(err), repr(err.details), repr(err.to_dict())):
        assert wrong not in surface
        assert "Bearer" not in surface
    # No chained httpx exception, whose request object would hold the header.
    assert err.__cause__ is None
    assert err.__context__ is None or err.__suppress_context__


def test_key_echoed_in_an_error_body_is_redacted() -> None:
    with FakeProvider() as fake:
        fake.script(Fail(403, message=f"key {KEY} is disabled"))
        result = collect(completions(fake), prompt())
    assert result.error is not None
    assert KEY not in result.error.message and "key *** is disabled" in result.error.message


def test_url_credentials_and_query_are_kept_out_of_messages() -> None:
    assert safe_url("https://user:pw@host:8443/v1/?key=abc#x") == "https://host:8443/v1"


# ---------------------------------------------------------------------------
# Cuts and broken streams


def test_stream_cut_midway_raises_streamcut_after_the_partial_text() -> None:
    with FakeProvider() as fake:
        fake.script(Reply("one two three four five", cut_after=2), Reply("unused"))
        result = collect(completions(fake), prompt())
        assert len(fake.requests) == 1  # never retried once output went out
    assert result.text() == "one two"
    assert isinstance(result.error, StreamCut)
    assert "lost mid-response" in result.error.message
    assert result.finish() == []


def test_clean_end_without_finish_is_a_cut_naming_the_open_branches() -> None:
    with FakeProvider() as fake:
        fake.script(Reply(["a b c", "d e f"], cut_after=3, clean_cut=True))
        result = collect(completions(fake), prompt(n=2))
    assert isinstance(result.error, StreamCut)
    assert "ended before branches 0, 1 finished" in result.error.message
    assert result.text(0) == "a b" and result.text(1) == "d"
    assert result.error.details["unfinished_branches"] == [0, 1]


def test_cut_before_any_output_is_retried() -> None:
    with FakeProvider() as fake:
        fake.script(Reply("lost", cut_after=0), Reply("found"))
        result = collect(chat(fake), messages())
        assert len(fake.requests) == 2
    assert result.error is None and result.text() == "found"


def test_malformed_json_first_event_is_a_backend_error() -> None:
    with FakeProvider() as fake:
        fake.script(Reply("x y", malformed_after=0), Reply("unused"))
        result = collect(completions(fake), prompt())
        assert len(fake.requests) == 1
        url = fake.openai_url
    err = result.error
    assert err is not None and not isinstance(err, StreamCut) and not err.retryable
    assert err.message.startswith(f"openai: malformed JSON in the event stream from {url}: ")
    assert result.chunks == []


def test_malformed_json_midstream_is_a_cut() -> None:
    with FakeProvider() as fake:
        fake.script(Reply("x y z", malformed_after=2))
        result = collect(chat(fake), messages())
    assert result.text() == "x y"
    assert isinstance(result.error, StreamCut) and "malformed JSON" in result.error.message


def test_malformed_json_body_not_streamed() -> None:
    with FakeProvider() as fake:
        fake.script(Reply("x", malformed_after=0))
        result = collect(completions(fake, stream=False), prompt())
    assert result.error is not None and "malformed JSON in the response" in result.error.message


def test_in_band_error_retried_before_output_and_cut_after() -> None:
    with FakeProvider() as fake:
        fake.script(Reply("a", error_after=0), Reply("ok"), Reply("p q r", error_after=1))
        first = collect(completions(fake), prompt())
        second = collect(completions(fake), prompt())
    assert first.error is None and first.text() == "ok"
    assert isinstance(second.error, StreamCut) and second.text() == "p"
    assert "overloaded_error" in second.error.message


# ---------------------------------------------------------------------------
# Anthropic Messages


def test_anthropic_stream_system_prefill_headers_usage() -> None:
    """System goes top-level, the prefill loses its trailing space, the reply streams."""
    conversation = [
        {"role": "system", "content": "You continue documents."},
        *USER,
        {"role": "assistant", "content": "Rivers are "},
    ]
    with FakeProvider(api_key=KEY, reported_model="claude-x-2026") as fake:
        fake.script(Reply(" long and slow."))
        backend = claude(fake)
        wp = backend.wire_params(messages(conversation))
        result = collect(backend, messages(conversation, temperature=0.5))
        sent = fake.last
    assert "prefill_trailing_whitespace" in wp.dropped
    assert result.error is None
    assert result.text() == " long and slow."
    assert result.finish() == ["stop"]
    assert result.chunks[-1].usage is not None
    assert result.chunks[-1].usage["output_tokens"] == 3
    assert {c.model for c in result.chunks} == {"claude-x-2026"}
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == KEY and "authorization" not in sent.headers
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body == {
        "model": "claude-x",
        "system": "You continue documents.",
        "messages": [*USER, {"role": "assistant", "content": "Rivers are"}],
        "temperature": 0.5,
        "max_tokens": 256,
        "stream": True,
    }


def test_anthropic_n_branches_are_concurrent_requests_interleaved() -> None:
    texts = {"a b c d e", "f g h i j", "k l m n o"}
    with FakeProvider(chunk_delay=0.02) as fake:
        fake.script(*(Reply(t) for t in sorted(texts)))
        result = collect(claude(fake), messages(n=3))
        bodies = [r.body for r in fake.requests]
    assert result.error is None
    assert {result.text(i) for i in range(3)} == texts
    assert all("n" not in b for b in bodies) and len(bodies) == 3
    order = [c.index for c in result.chunks if c.text]
    assert order != sorted(order)  # interleaved as they arrived, not branch after branch
    for i in range(3):
        assert [c.finish_reason for c in result.chunks if c.index == i][-1] == "stop"
    assert len(result.usages) == 3  # one per request


def test_anthropic_not_streamed_with_stop_and_max_tokens() -> None:
    with FakeProvider() as fake:
        fake.script(Reply("alpha beta END gamma"), Reply("one two three"))
        stopped = collect(claude(fake, stream=False), messages(stop=["END"]))
        limited = collect(claude(fake, stream=False), messages(max_tokens=2))
        assert fake.requests[0].body["stop_sequences"] == ["END"]
        assert "stream" not in fake.requests[0].body
    assert stopped.text() == "alpha beta " and stopped.finish() == ["stop"]
    assert limited.text() == "one two" and limited.finish() == ["length"]
    assert limited.chunks[0].usage is not None and limited.chunks[0].usage["output_tokens"] == 2


def test_anthropic_prefill_rejection_is_reported_verbatim() -> None:
    with FakeProvider(anthropic_prefill=False) as fake:
        result = collect(
            claude(fake), messages([*USER, {"role": "assistant", "content": "Rivers"}])
        )
        url = fake.anthropic_url
    err = result.error
    assert err is not None and err.status == 400 and not err.retryable
    assert err.message == f"anthropic: 400 Bad Request from {url}: {ANTHROPIC_PREFILL_REJECTED}"
    assert err.details["error_type"] == "invalid_request_error"
    assert str(err.details["request_id"]).startswith("req_fake")


def test_anthropic_temperature_rejection_is_reported_verbatim() -> None:
    with FakeProvider(anthropic_sampling="none") as fake:
        result = collect(claude(fake), messages(temperature=0.2))
    assert result.error is not None and ANTHROPIC_TEMPERATURE_DEPRECATED in result.error.message


def test_anthropic_overloaded_and_rate_limited_are_retried() -> None:
    with FakeProvider() as fake:
        fake.script(Fail(529), Fail(429, retry_after="0"), Reply("fine"))
        result = collect(claude(fake), messages())
        assert len(fake.requests) == 3
    assert result.error is None and result.text() == "fine"


def test_anthropic_401_does_not_leak_the_key() -> None:
    with FakeProvider(api_key="right-key") as fake:
        result = collect(claude(fake), messages())
    err = result.error
    assert err is not None and err.status == 401
    assert err.message.endswith(": invalid x-api-key")
    assert KEY not in repr(err.to_dict()) and KEY not in err.message


def test_anthropic_cut_and_error_event_after_output_are_cuts() -> None:
    with FakeProvider() as fake:
        fake.script(Reply("a b c", cut_after=1), Reply("d e f", error_after=2))
        cut = collect(claude(fake), messages())
        errored = collect(claude(fake), messages())
    assert isinstance(cut.error, StreamCut) and cut.text() == "a"
    assert isinstance(errored.error, StreamCut) and errored.text() == "d e"
    assert "overloaded_error" in errored.error.message and "Overloaded" in errored.error.message


def test_anthropic_one_failed_branch_keeps_the_others() -> None:
    """A branch failing must not discard siblings: they finish, then a StreamCut names it."""
    with FakeProvider(chunk_delay=0.01) as fake:
        fake.script(Reply("kept text here"), Fail(400, message="bad branch"))
        result = collect(claude(fake), messages(n=2))
    err = result.error
    assert isinstance(err, StreamCut)
    assert err.details["failed_branches"] in ([0], [1])
    failed = 0 if err.details["failed_branches"] == [0] else 1
    good = 1 - failed
    assert result.text(good) == "kept text here" and result.finish(good) == ["stop"]
    assert result.text(failed) == "" and "bad branch" in err.message


# ---------------------------------------------------------------------------
# Plumbing units


def feed_all(parts: list[str]) -> list[ServerEvent]:
    decoder = SSEDecoder()
    events = [e for part in parts for e in decoder.feed(part)]
    return events + decoder.close()


def test_sse_decoder_line_endings_comments_multiline_and_splits() -> None:
    stream = (
        ": keep-alive comment\r\n"
        "event: message_start\r\n"
        'data: {"a":\r\n'
        "data: 1}\r\n"
        "\r\n"
        "data: second\r"
        "\r"
        "id: 7\n"
        "data:no-space\n"
        "\n"
        "data: [DONE]\n\n"
    )
    expected = [
        ServerEvent("message_start", '{"a":\n1}'),
        ServerEvent("message", "second"),
        ServerEvent("message", "no-space", "7"),
        ServerEvent("message", "[DONE]", "7"),
    ]
    assert feed_all([stream]) == expected
    # Every split point, including between the CR and LF of one line ending.
    for cut in range(1, len(stream)):
        assert feed_all([stream[:cut], stream[cut:]]) == expected
    assert feed_all(list(stream)) == expected


def test_sse_decoder_end_of_stream() -> None:
    assert feed_all(["data: last\n"]) == [ServerEvent("message", "last")]  # lenient
    assert feed_all(['data: {"partial']) == []  # a cut mid-line is not an event
    assert feed_all(["event: ping\n\n"]) == []  # no data, no event


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after(date, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_provider_message_shapes() -> None:
    assert provider_message(b'{"error": {"message": "m", "type": "t"}}') == ("m", "t")
    assert provider_message(b'{"type":"error","error":{"type":"x","message":"y"}}') == ("y", "x")
    assert provider_message(
        b'{"object":"error","message":"vllm says","type":"BadRequestError"}'
    ) == (
        "vllm says",
        "BadRequestError",
    )
    assert provider_message(b'{"detail": [{"msg": "field required"}]}') == ("field required", None)
    assert provider_message(b'{"error": "plain"}') == ("plain", None)
    assert provider_message(b"upstream timed out\n") == ("upstream timed out", None)
    assert provider_message(b"<html><body>502</body></html>") == (None, None)


def test_importing_loom_does_not_import_httpx2() -> None:
    code = (
        "import sys, loom, loom.generation, loom.generation.backends.http, loom.generation.backends.base\n"
        "assert 'httpx2' not in sys.modules, 'httpx2 imported'\n"
        "import loom.generation.backends.openai_compat, loom.generation.backends.anthropic\n"
        "assert 'httpx2' not in sys.modules, 'backends import httpx2 before use'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
