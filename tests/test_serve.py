"""`loom serve`: the official OpenAI client and plain HTTP against a real server process,
backed by the local fake provider (and once by the embedded model)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import loom
from loom.document import Document, Node

from conftest import KEY, Loom
from fakeprovider import Fail, FakeProvider, Reply

openai = pytest.importorskip("openai", reason="the test extra (openai) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")

PROMPT = "The lighthouse keeper"


@dataclass
class Served:
    url: str
    info: dict[str, Any]
    proc: subprocess.Popen[bytes]
    cwd: Path
    seen_roots: int = 0

    def client(self, **kwargs: Any) -> Any:
        return openai.OpenAI(base_url=self.url, api_key="unused", max_retries=0, **kwargs)

    def http(
        self, method: str, path: str, body: bytes | dict[str, Any] | None = None, **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        """A plain HTTP request (no client library): status, headers, body."""
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        out = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        conn.close()
        return out

    def record(self) -> Document:
        return loom.open(self.cwd / "rec.loom.json")

    def new_roots(self) -> list[Node]:
        """The branches recorded since the test began."""
        record = self.record()
        return [record.node(r) for r in record.root_ids[self.seen_roots :]]

    def stop(self, signum: int = signal.SIGINT) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode, self.proc.stderr.read().decode() if self.proc.stderr else ""


def start(loom: Loom, *args: str, env: dict[str, str] | None = None) -> Served:
    proc = loom.start("serve", "--port", "0", "--json", *args, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=30)
        raise AssertionError(f"loom serve did not start: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
    info = json.loads(line)
    return Served(info["url"], info, proc, loom.cwd)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    """One provider for the module's server (each test starts it with a clean script)."""
    with FakeProvider(api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory, fake: FakeProvider) -> Iterator[Served]:
    """One `loom serve` for the module: base, chat and Anthropic models on the fake provider."""
    cwd = tmp_path_factory.mktemp("serve")
    home = tmp_path_factory.mktemp("serve-home")
    runner = Loom(cwd)
    env = {"LOOM_HOME": str(home), "FAKE_KEY": KEY}
    for name, provider, url, model in (
        ("base", "openai", fake.openai_url, "base-1"),
        ("chat", "openai-chat", fake.openai_url, "chat-1"),
        ("claude", "anthropic", fake.anthropic_url, "claude-x"),
    ):
        runner.ok(
            "models", "add", name, "--provider", provider, "--base-url", url,
            "--model", model, "--key-env", "FAKE_KEY", env=env,
        )  # fmt: skip
    server = start(
        runner, "-m", "base", "-m", "chat", "-m", "claude", "--record", "rec.loom.json", env=env
    )
    yield server
    code, err = server.stop()
    assert code == 0, err


@pytest.fixture
def served(module_server: Served, fake: FakeProvider) -> Served:
    fake.clear()
    module_server.seen_roots = len(module_server.record().root_ids)
    return module_server


@pytest.fixture
def fake_provider(fake: FakeProvider) -> FakeProvider:
    """This module's tests script the module's provider (conftest's is per test)."""
    return fake


# ---- completions -------------------------------------------------------------------------------


def test_completions_return_n_continuations_and_record_them(
    served: Served, fake_provider: FakeProvider
) -> None:
    """The prompt goes upstream as it is; n choices come back and become children of the prompt."""
    result = served.client().completions.create(
        model="base", prompt=PROMPT, n=3, max_tokens=20, temperature=0.7
    )
    texts = [c.text for c in result.choices]
    assert len(texts) == 3 and all(texts)
    assert [c.index for c in result.choices] == [0, 1, 2]
    assert {c.finish_reason for c in result.choices} == {"stop"}
    assert result.object == "text_completion" and result.model == "base"
    sent = fake_provider.last.body
    assert sent["prompt"] == PROMPT and sent["n"] == 3 and sent["temperature"] == 0.7
    assert result.usage is not None and result.usage.completion_tokens > 0

    (root,) = served.new_roots()
    assert root.text == PROMPT and root.meta["served"]["endpoint"] == "completions"
    kids = root.children
    assert sorted(k.text for k in kids) == sorted(texts)
    gen = kids[0].meta["gen"]
    assert gen["model"] == "base" and gen["params"]["temperature"] == 0.7
    assert gen["sent"]["max_tokens"] == 20 and gen["emulation"]["method"] == "completion"


def test_streamed_text_is_the_same_as_the_whole_answer(served: Served) -> None:
    client = served.client()
    whole = client.completions.create(model="base", prompt=PROMPT, n=2, seed=7)
    streamed: dict[int, str] = {0: "", 1: ""}
    finish: dict[int, str | None] = {}
    for chunk in client.completions.create(model="base", prompt=PROMPT, n=2, seed=7, stream=True):
        for c in chunk.choices:
            streamed[c.index] += c.text
            if c.finish_reason:
                finish[c.index] = c.finish_reason
    assert streamed == {c.index: c.text for c in whole.choices}
    assert finish == {0: "stop", 1: "stop"}


def test_stream_sends_tokens_before_the_generation_ends(
    served: Served, fake_provider: FakeProvider
) -> None:
    """Chunks arrive while the upstream still streams, not all at the end."""
    words = " ".join(f"word{i}" for i in range(40))
    fake_provider.script(Reply(" " + words, chunk_delay=0.05))
    seen: list[str] = []
    arrived_while_upstream_busy = False
    for chunk in served.client().completions.create(model="base", prompt=PROMPT, stream=True):
        if chunk.choices and chunk.choices[0].text:
            seen.append(chunk.choices[0].text)
            if fake_provider.in_flight:
                arrived_while_upstream_busy = True
    assert "".join(seen) == " " + words
    assert len(seen) > 5 and arrived_while_upstream_busy


def test_logprobs_come_back_in_openai_shape(served: Served) -> None:
    result = served.client().completions.create(model="base", prompt=PROMPT, logprobs=2)
    (choice,) = result.choices
    probs = choice.logprobs
    assert probs is not None
    assert "".join(probs.tokens) == choice.text
    assert len(probs.token_logprobs) == len(probs.tokens) == len(probs.top_logprobs)
    assert all(lp <= 0 for lp in probs.token_logprobs)
    assert all(len(top) == 2 for top in probs.top_logprobs)
    assert probs.text_offset[0] == len(PROMPT)


def test_stop_max_tokens_and_echo(served: Served, fake_provider: FakeProvider) -> None:
    fake_provider.script(Reply(" alpha beta gamma delta"), Reply(" one two three four five"))
    client = served.client()
    stopped = client.completions.create(model="base", prompt=PROMPT, stop=[" gamma"], echo=True)
    assert fake_provider.last.body["stop"] == [" gamma"]
    assert stopped.choices[0].text == PROMPT + " alpha beta"
    short = client.completions.create(model="base", prompt=PROMPT, max_tokens=2)
    assert short.choices[0].text == " one two" and short.choices[0].finish_reason == "length"


def test_several_prompts_get_their_own_choices(served: Served) -> None:
    result = served.client().completions.create(model="base", prompt=["A", "B"], n=2)
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    assert sorted(r.text for r in served.new_roots()) == ["A", "B"]
    assert all(len(r.children) == 2 for r in served.new_roots())


def test_a_chat_model_continues_text_through_emulation(
    served: Served, fake_provider: FakeProvider
) -> None:
    """A raw prompt to a chat model is framed for it and its reply cleaned; the record shows how."""
    fake_provider.script(Reply("Sure! Here's a continuation:\n\n woke to find the sea gone."))
    result = served.client().completions.create(model="chat", prompt=PROMPT)
    assert result.choices[0].text == " woke to find the sea gone."
    upstream = fake_provider.last
    assert upstream.path.endswith("/chat/completions")
    assert any(PROMPT in m["content"] for m in upstream.body["messages"])
    (root,) = served.new_roots()
    (child,) = root.children
    emulation = child.meta["gen"]["emulation"]
    assert emulation["method"] in ("system", "fewshot")
    assert emulation["cleanup"]["verdict"] == "ok"
    assert emulation["cleanup"]["raw"].startswith("Sure!")


def test_streaming_a_chat_model_sends_only_cleaned_text(
    served: Served, fake_provider: FakeProvider
) -> None:
    story = " woke to find the sea gone, and the lamp still burning in the grey light of morning."
    fake_provider.script(Reply("Sure! Here's a continuation:\n\n" + story, chunk_delay=0.01))
    text = "".join(
        c.choices[0].text
        for c in served.client().completions.create(model="chat", prompt=PROMPT, stream=True)
        if c.choices
    )
    assert text == story


def test_concurrent_requests_are_all_recorded(served: Served) -> None:
    """Requests at once write the same record file under its lock: none is lost."""
    from concurrent.futures import ThreadPoolExecutor

    client = served.client()
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda i: client.completions.create(model="base", prompt=f"p{i}", n=2), range(8)
            )
        )
    assert all(len(a.choices) == 2 for a in answers)
    recorded = served.new_roots()
    assert sorted(r.text for r in recorded) == sorted(f"p{i}" for i in range(8))
    assert all(len(r.children) == 2 for r in recorded)


def test_an_oversized_body_is_refused(served: Served) -> None:
    status, error = error_of(served.http("POST", "/v1/completions", b"x" * (17 * 2**20)))
    assert status == 413 and "16 MiB" in error["message"]


# ---- chat completions --------------------------------------------------------------------------


def test_chat_completions_pass_the_conversation_through(
    served: Served, fake_provider: FakeProvider
) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who keeps the light?"},
    ]
    result = served.client().chat.completions.create(model="chat", messages=messages, n=2)
    assert len(result.choices) == 2
    assert all(c.message.role == "assistant" and c.message.content for c in result.choices)
    assert fake_provider.last.body["messages"] == messages
    (system,) = served.new_roots()
    assert system.kind == "system" and system.text == "Be brief."
    (user,) = system.children
    assert user.kind == "user"
    replies = user.children
    assert {r.kind for r in replies} == {"assistant"}
    assert sorted(r.text for r in replies) == sorted(c.message.content for c in result.choices)


def test_chat_completions_stream(served: Served) -> None:
    client = served.client()
    messages = [{"role": "user", "content": "Hello"}]
    whole = client.chat.completions.create(model="claude", messages=messages, seed=1)
    roles, text = set(), ""
    for chunk in client.chat.completions.create(
        model="claude", messages=messages, seed=1, stream=True
    ):
        for c in chunk.choices:
            roles.add(c.delta.role)
            text += c.delta.content or ""
    assert "assistant" in roles
    assert text == whole.choices[0].message.content


def test_chat_logprobs(served: Served) -> None:
    result = served.client().chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "Hi"}], logprobs=True, top_logprobs=3
    )
    content = result.choices[0].logprobs.content
    assert "".join(t.token for t in content) == result.choices[0].message.content
    assert all(len(t.top_logprobs) == 3 for t in content)


def test_models_are_listed_without_secrets(served: Served) -> None:
    models = served.client().models.list()
    assert [m.id for m in models.data] == ["base", "chat", "claude"]
    status, _, body = served.http("GET", "/v1/models/chat")
    assert status == 200 and json.loads(body)["id"] == "chat"
    everything = served.http("GET", "/v1/models")[2].decode()
    assert KEY not in everything and "FAKE_KEY" not in everything and "127.0.0.1" not in everything


# ---- errors ---------------------------------------------------------------------------------------


def error_of(response: tuple[int, dict[str, str], bytes]) -> tuple[int, dict[str, Any]]:
    status, headers, body = response
    assert headers["content-type"] == "application/json"
    payload = json.loads(body)
    assert set(payload) == {"error"}
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    return status, payload["error"]


def test_request_errors_have_openai_shape_and_status(served: Served) -> None:
    client = served.client()
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="nope", prompt="x")
    assert "base, chat, claude" in str(missing.value)
    with pytest.raises(openai.BadRequestError) as bad_n:
        client.completions.create(model="base", prompt="x", n=0)
    assert bad_n.value.body["param"] == "n"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="base", prompt="x", temperature=9)
    with pytest.raises(openai.BadRequestError, match="token-id"):
        client.completions.create(model="base", prompt=[1, 2, 3])

    status, error = error_of(served.http("POST", "/v1/completions", b"{not json"))
    assert status == 400 and "not valid JSON" in error["message"]
    status, error = error_of(served.http("GET", "/v1/completions"))
    assert status == 405
    status, error = error_of(served.http("POST", "/v2/anything", {}))
    assert status == 404 and error["code"] == "unknown_url"
    status, error = error_of(
        served.http("POST", "/v1/chat/completions", {"model": "chat", "messages": "hi"})
    )
    assert status == 400 and error["param"] == "messages"
    with_tools = {"model": "chat", "messages": [{"role": "user", "content": "x"}], "tools": [{}]}
    status, error = error_of(served.http("POST", "/v1/chat/completions", with_tools))
    assert status == 400 and error["param"] == "tools"
    status, error = error_of(
        served.http(
            "POST", "/v1/completions", {"model": "base", "prompt": "x", "presets": ["nope"]}
        )
    )
    assert status == 400 and "unknown preset" in error["message"]
    assert all(not r.children for r in served.new_roots())


def test_upstream_failures_map_to_statuses(served: Served, fake_provider: FakeProvider) -> None:
    client = served.client()
    fake_provider.script(Fail(429, headers={"x-should-retry": "false"}))
    with pytest.raises(openai.RateLimitError):
        client.completions.create(model="base", prompt="x")
    fake_provider.script(Fail(401))
    with pytest.raises(openai.APIStatusError) as upstream:
        client.completions.create(model="base", prompt="x")
    assert upstream.value.status_code == 502
    assert KEY not in str(upstream.value.body)


def test_an_upstream_failure_mid_stream_is_an_error_event(
    served: Served, fake_provider: FakeProvider
) -> None:
    fake_provider.script(Fail(401))
    with pytest.raises(openai.APIError, match="generation failed"):
        for _ in served.client().completions.create(model="base", prompt="x", stream=True):
            pass


def test_a_client_that_hangs_up_cancels_the_upstream_request(
    served: Served, fake_provider: FakeProvider
) -> None:
    """Streaming and not: the provider's response is abandoned, not read to its end."""
    long_reply = " " + " ".join(f"w{i}" for i in range(1000))  # 50 s to stream in full
    for stream in (True, False):
        fake_provider.clear()
        answered = fake_provider.answered
        fake_provider.script(Reply(long_reply, chunk_delay=0.05))
        body = {"model": "base", "prompt": PROMPT, "stream": stream}
        parts = urlsplit(served.url)
        sock = socket.create_connection((parts.hostname, parts.port))
        data = json.dumps(body).encode()
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(data)}\r\n\r\n".encode()
            + data
        )
        wait_for(lambda: fake_provider.in_flight == 1)
        if stream:
            assert sock.recv(1024).startswith(b"HTTP/1.1 200")
        sock.close()
        wait_for(lambda: fake_provider.in_flight == 0)
        assert fake_provider.answered == answered
    # The prompts were recorded; nothing was kept of the abandoned generations.
    assert [r.text for r in served.new_roots()] == [PROMPT, PROMPT]


def wait_for(condition: Any, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


# ---- the server ---------------------------------------------------------------------------------


def test_api_key_is_required_when_set(woven: Loom) -> None:
    server = start(woven, "-m", "base", env={"LOOM_SERVE_KEY": "s3cret-key"})
    try:
        assert server.info["auth"] is True
        with pytest.raises(openai.AuthenticationError):
            server.client().completions.create(model="base", prompt="x")
        keyed = openai.OpenAI(base_url=server.url, api_key="s3cret-key", max_retries=0)
        assert keyed.completions.create(model="base", prompt="x").choices[0].text
    finally:
        code, err = server.stop(signal.SIGTERM)
    assert code == 0, err  # SIGTERM is the ordinary way to stop a server


def test_another_address_needs_a_key(woven: Loom) -> None:
    result = woven("serve", "--host", "0.0.0.0", "--port", "0")
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and "LOOM_SERVE_KEY" in result.stderr


def test_bad_serve_options_are_one_line(woven: Loom, tmp_path: Path) -> None:
    unknown = woven("serve", "-m", "nope", "--port", "0")
    assert unknown.code == 2 and "unknown model 'nope'" in unknown.stderr
    (tmp_path / "bad.loom.json").write_text("{not a document")
    damaged = woven("serve", "--record", "bad.loom.json", "--port", "0", "--json")
    assert damaged.code == 1 and damaged.stderr.count("\n") == 1
    assert json.loads(damaged.stdout)["error"]["code"] == "bad_document"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = woven("serve", "--port", str(taken.getsockname()[1]))
    assert busy.code == 1 and "cannot listen" in busy.stderr and busy.stderr.count("\n") == 1


@pytest.mark.model
def test_the_embedded_model_serves_completions(loom: Loom, model_path: Path) -> None:
    """The real local model behind the endpoint: loaded once, n choices, logprobs."""
    models_toml = Path(os.environ["LOOM_HOME"]) / "models.toml"
    models_toml.write_text(
        f'[models.gemma]\nprovider = "embedded"\nmodel = "gemma-3-270m"\n'
        f'[models.gemma.options]\nmodel_path = "{model_path}"\n'
    )
    server = start(loom, "-m", "gemma")
    try:
        client = server.client()
        first = client.completions.create(
            model="gemma", prompt="Once upon a time", n=2, max_tokens=8, logprobs=1, seed=3
        )
        assert len(first.choices) == 2 and all(c.text for c in first.choices)
        assert first.choices[0].logprobs is not None
        streamed = "".join(
            c.choices[0].text
            for c in client.completions.create(
                model="gemma", prompt="Once upon a time", max_tokens=8, stream=True
            )
            if c.choices
        )
        assert streamed
    finally:
        code, err = server.stop()
    assert code == 0, err


def test_a_stream_never_sends_two_attempts_one_after_the_other(
    served: Served, fake_provider: FakeProvider
) -> None:
    """A child retried after its output was rejected: the client gets the retry's text once,
    never the refusal and never the two attempts run together."""
    fake_provider.script(
        Reply(["I'm sorry, but I can't help with continuing this text."], finish_reason="stop"),
        Reply([" did not return for a week."], finish_reason="stop"),
    )
    text = "".join(
        c.choices[0].text
        for c in served.client().completions.create(model="chat", prompt=PROMPT, stream=True)
        if c.choices
    )
    assert text == " did not return for a week."
    assert len(fake_provider.requests) == 2  # the retry ran and its text was recorded
    (root,) = served.new_roots()
    (child,) = root.children
    assert child.text.strip() == "did not return for a week."
