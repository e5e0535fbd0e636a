"""Base-model emulation end to end: chat models with bad habits, and providers that refuse.

The fake provider plays a chat-only model that prefixes preambles and refuses, and an
Anthropic endpoint that rejects prefill or temperature with Anthropic's real error texts.
"""

from __future__ import annotations

import pytest

from conftest import Loom
from fakeprovider import FakeProvider, Reply

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
    result = loom.ok("gen", "-n", "1", "--fields", "all", *args, env={"FAKE_KEY": "k"})
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
