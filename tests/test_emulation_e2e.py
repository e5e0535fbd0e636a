"""Base-model emulation end to end: chat models with bad habits, providers that refuse, and
real local servers.

The fake provider plays a chat-only model that prefixes preambles and refuses, an
Anthropic endpoint that rejects prefill or temperature with Anthropic's real error texts,
and a local server that says who it is. SmolLM2-135M-Instruct runs for real, in-process
(`-m smollm2`) and behind llama.cpp's own HTTP server started here on 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Loom
from fakeprovider import FakeProvider, Reply
from loom.emulation import servers

PROMPT = "The sea went out and"


@pytest.fixture
def doc(loom: Loom, fake_provider: FakeProvider) -> Loom:
    loom.ok("new", "e.loom.json", "--text", PROMPT)
    loom.ok(
        "models",
        "add",
        "chat",
        "--provider",
        "openai-chat",
        "--base-url",
        fake_provider.openai_url,
        "--model",
        "chat-1",
        "--kind",
        "chat",
    )
    loom.ok(
        "models",
        "add",
        "claude45",
        "--provider",
        "anthropic",
        "--base-url",
        fake_provider.anthropic_url,
        "--model",
        "claude-sonnet-4-5",
        "--key-env",
        "FAKE_KEY",
    )
    return loom


def gen_one(loom: Loom, *args: str) -> dict:  # type: ignore[type-arg]
    result = loom.ok("gen", "-n", "1", "--json", *args, env={"FAKE_KEY": "k"})
    [node] = result.json()["nodes"]
    return node  # type: ignore[no-any-return]


def test_chat_preamble_is_stripped_and_the_seam_fixed(
    doc: Loom, fake_provider: FakeProvider
) -> None:
    fake_provider.script(
        Reply(["Sure! Here's the continuation:\n\nnever came back."], finish_reason="stop")
    )
    node = gen_one(doc, "-m", "chat")
    assert node["text"] == " never came back."
    emulation = node["meta"]["gen"]["emulation"]
    assert emulation["method"] == "system" and emulation["framing"]
    assert emulation["cleanup"]["verdict"] == "ok"
    assert emulation["cleanup"]["raw"].startswith("Sure!")
    assert [op["op"] for op in emulation["cleanup"]["ops"]][:1] == ["strip_preamble"]
    sent = fake_provider.requests[0].body["messages"]
    assert sent[0]["role"] == "system" and PROMPT in sent[-1]["content"]
    assert doc.ok("show").stdout == PROMPT  # the cursor stayed; the child holds the text
    assert doc.ok("show", node["id"]).stdout == PROMPT + " never came back."


def test_refusal_is_retried_once_with_the_next_method(
    doc: Loom, fake_provider: FakeProvider
) -> None:
    fake_provider.script(
        Reply(["I'm sorry, but I can't help with continuing this text."], finish_reason="stop"),
        Reply(["did not return for a week."], finish_reason="stop"),
    )
    node = gen_one(doc, "-m", "chat")
    assert node["text"] == " did not return for a week."
    emulation = node["meta"]["gen"]["emulation"]
    assert emulation["method"] == "fewshot"
    assert emulation["retried_from"]["method"] == "system"
    assert emulation["retried_from"]["verdict"] == "refusal"
    assert len(fake_provider.requests) == 2


def test_prefill_rejected_falls_back_to_a_system_prompt(
    doc: Loom, fake_provider: FakeProvider
) -> None:
    fake_provider.anthropic_prefill = False
    fake_provider.script(Reply(["never came back."], finish_reason="stop"))
    node = gen_one(doc, "-m", "claude45", "--max-tokens", "20")
    first, second = (r.body for r in fake_provider.requests)
    assert first["messages"][-1]["role"] == "assistant"  # tried prefill first
    assert second["messages"][-1]["role"] == "user"
    emulation = node["meta"]["gen"]["emulation"]
    assert emulation["retried_from"]["reason"] == "prefill rejected"
    assert "does not support assistant message prefill" in emulation["retried_from"]["error"]
    assert node["text"].strip() == "never came back."


def test_temperature_rejected_is_dropped_and_retried(
    doc: Loom, fake_provider: FakeProvider
) -> None:
    fake_provider.anthropic_sampling = "none"
    node = gen_one(doc, "-m", "claude45", "--temperature", "0.8")
    first, second = (r.body for r in fake_provider.requests)
    assert first["temperature"] == 0.8 and "temperature" not in second
    emulation = node["meta"]["gen"]["emulation"]
    assert emulation["retried_from"]["reason"] == "temperature rejected"
    assert node["text"]


def test_forcing_an_impossible_method_is_one_clear_error(doc: Loom) -> None:
    result = doc("gen", "-m", "chat", "--emulate", "completion")
    assert result.code == 1 and result.stderr.count("\n") == 1
    assert "needs a backend that takes a raw prompt" in result.stderr


def test_emulate_off_sends_the_prompt_untouched(doc: Loom, fake_provider: FakeProvider) -> None:
    doc.ok("edit", "--text", PROMPT + " ")  # a trailing space that emulation would strip
    fake_provider.script(Reply(["raw reply"], finish_reason="stop"))
    node = gen_one(doc, "-m", "chat", "--emulate", "off")
    assert node["text"] == "raw reply"
    assert fake_provider.requests[0].body["messages"][-1]["content"] == PROMPT + " "


def test_parameters_a_model_rejects_are_not_sent(doc: Loom, fake_provider: FakeProvider) -> None:
    """The capability table says newer Claude models reject temperature: never sent, and recorded."""
    doc.ok(
        "models",
        "add",
        "claude47",
        "--provider",
        "anthropic",
        "--base-url",
        fake_provider.anthropic_url,
        "--model",
        "claude-opus-4-7",
        "--key-env",
        "FAKE_KEY",
    )
    node = gen_one(doc, "-m", "claude47", "--temperature", "0.8")
    assert len(fake_provider.requests) == 1 and "temperature" not in fake_provider.requests[0].body
    assert "temperature" in node["meta"]["gen"]["emulation"]["adjusted"]


# ---------------------------------------------------------------------------
# Local servers: recognised by `loom models add`, raw prompts to /completions
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owners", "server"),
    [
        (["llamacpp"], "llamacpp"),
        (["vllm"], "vllm"),
        (["sglang"], "sglang"),
        (["organization_owner", "organization_owner"], "lmstudio"),
        (["library"], "ollama"),
        (["openai", "system"], None),
        ([], None),
    ],
)
def test_servers_are_identified_by_their_model_list(owners: list[str], server: str | None) -> None:
    listing = {
        "object": "list",
        "data": [{"id": f"m{i}", "owned_by": o} for i, o in enumerate(owners)],
    }
    assert servers.identify(listing) == server
    assert servers.identify({"error": "nope"}) is None and servers.identify([1]) is None


def test_models_add_recognises_a_llama_cpp_server(loom: Loom) -> None:
    with FakeProvider(owned_by="llamacpp") as fake:
        added = loom.ok(
            "models",
            "add",
            "local",
            "--provider",
            "openai-chat",
            "--base-url",
            fake.openai_url,
            "--model",
            "chat-1",
            "--json",
        ).json()
        assert fake.lookups == ["/v1/models"] and fake.requests == []
        assert added["server"] == "llamacpp" and added["detected"] is True
        # Raw completion first, then the open assistant turn (the table's llama.cpp row).
        assert added["emulation"][:2] == ["completion", "template"]
        fake.script(Reply([" and the gulls followed."], finish_reason="stop"))
        loom.ok("new", "s.loom.json", "--text", "The boat came in")
        node = gen_one(loom, "-m", "local")
        assert fake.requests[0].path == "/v1/completions"  # the chat model's raw endpoint
        assert fake.requests[0].body["prompt"] == "The boat came in"
    assert node["meta"]["gen"]["emulation"]["method"] == "completion"
    assert node["text"] == " and the gulls followed."
    toml = (Path(os.environ["LOOM_HOME"]) / "models.toml").read_text()
    assert 'server = "llamacpp"' in toml and "raw_prompt = true" in toml


def test_models_add_server_flag_and_when_nothing_is_asked(loom: Loom) -> None:
    with FakeProvider() as fake:
        told = loom.ok(
            "models",
            "add",
            "v",
            "--provider",
            "openai-chat",
            "--base-url",
            fake.openai_url,
            "--model",
            "m",
            "--server",
            "vllm",
            "--json",
        ).json()
        assert told["server"] == "vllm" and told["detected"] is False and fake.lookups == []
        unknown = loom.ok(
            "models",
            "add",
            "u",
            "--provider",
            "openai-chat",
            "--base-url",
            fake.openai_url,
            "--model",
            "m",
        )
        assert "not recognised" in unknown.stdout and fake.lookups == ["/v1/models", "/api/version"]
        # Hosted APIs and other providers are never asked.
        loom.ok("models", "add", "o", "--provider", "openai-chat", "--model", "gpt-4o")
        loom.ok("models", "add", "c", "--provider", "anthropic", "--model", "claude-sonnet-4-5")
        assert fake.lookups == ["/v1/models", "/api/version"]
    bad = loom("models", "add", "c2", "--provider", "anthropic", "--model", "x", "--server", "vllm")
    assert bad.code == 2 and bad.stderr.count("\n") == 1 and "OpenAI-compatible" in bad.stderr
    # A server that does not answer: the model is added all the same, without server facts.
    dead = loom.ok(
        "models",
        "add",
        "d",
        "--provider",
        "openai-chat",
        "--base-url",
        f"http://127.0.0.1:{free_port()}/v1",
        "--model",
        "m",
        "--json",
    ).json()
    assert dead["server"] is None and dead["emulation"] == ["system", "fewshot"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
