"""Chat weaving (`loom say`, `loom reply`): branches as conversations, through real processes
and the local test server speaking OpenAI chat and Anthropic Messages."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, Loom
from fakeprovider import Fail, FakeProvider, Reply

OPENLOOM = ROOT / "tests" / "fixtures" / "openloom_existence_of_claude.json"


def run(woven: Loom, *args: str, ok: bool = True) -> dict:
    # Every field: these tests read the generation records (meta), which lists leave out.
    result = woven(*args, "--fields", "all", env=woven.env)  # type: ignore[attr-defined]
    if ok:
        assert result.code == 0, result.stderr
        return result.json()
    return {"code": result.code, "stderr": result.stderr, "error": result.error()}


def messages(fake: FakeProvider, index: int = -1) -> list[dict[str, str]]:
    return fake.requests[index].body["messages"]


def test_say_adds_a_turn_and_n_replies_that_record_the_conversation(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    woven.ok("set", "system", "You are a lighthouse keeper.")
    fake_provider.script(Reply(["The sea.", "The wind."], finish_reason="stop"))
    made = run(woven, "say", "-m", "chat", "-n", "2", "What do you hear?")
    sent = messages(fake_provider)
    assert sent == [
        {"role": "system", "content": "You are a lighthouse keeper."},
        {"role": "user", "content": "Once upon a time\n\nWhat do you hear?"},
    ]
    assert [n["text"] for n in made["nodes"]] == ["The sea.", "The wind."]
    turn = woven.ok("show", made["parent"], "--json").json()["node"]
    assert turn["kind"] == "user" and turn["text"] == "What do you hear?"
    for node in made["nodes"]:
        gen = node["meta"]["gen"]
        assert node["kind"] == "assistant" and node["parent"] == turn["id"]
        assert gen["mode"] == "chat" and gen["emulation"]["method"] == "chat"
        assert gen["prompt"]["messages"] == 2 and gen["prompt"]["turns"][-1][-1] == turn["id"]
        assert gen["finish_reason"] == "stop" and gen["role"] == "assistant"
    # The cursor is on the first reply, so the next turn continues that conversation.
    assert made["cursor"] == made["nodes"][0]["id"]
    fake_provider.script(Reply(["Gulls."], finish_reason="stop"))
    run(woven, "say", "-m", "chat", "-n", "1", "And now?")
    assert [m["role"] for m in messages(fake_provider)] == ["system", "user", "assistant", "user"]
    assert messages(fake_provider)[2]["content"] == "The sea."


def test_the_plain_text_before_a_conversation_is_said_once(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    result = woven("say", "-m", "chat", "-n", "1", "Go on.", env=woven.env)  # type: ignore[attr-defined]
    assert result.code == 0, result.stderr
    assert result.stderr.count("no chat role") == 1


def test_consecutive_turns_join_and_an_edited_turn_starts_a_new_conversation(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    root = woven.ok("show", "--json").json()["node"]["id"]
    woven.ok("rm", root)  # a fresh conversation, no preamble
    first = woven.ok("add", "--root", "--kind", "user", "Tell me a story").stdout.strip()
    woven.ok("add", "--kind", "user", " about the sea.")
    fake_provider.script(Reply(["Once, the tide."], finish_reason="stop"))
    made = run(woven, "reply", "-m", "chat", "-n", "1")
    assert messages(fake_provider) == [
        {"role": "user", "content": "Tell me a story about the sea."}
    ]
    old = {n["id"]: n["text"] for n in woven.ok("tree", "--json").json()["nodes"]}
    version = woven.ok("edit", first, "--text", "Tell me a poem").stdout.strip()
    assert version != first  # it has children: a new sibling version
    woven.ok("goto", version)
    fake_provider.script(Reply(["Waves."], finish_reason="stop"))
    run(woven, "say", "-m", "chat", "-n", "1", "Short, please.")
    assert messages(fake_provider) == [
        {"role": "user", "content": "Tell me a poem\n\nShort, please."}
    ]
    now = {n["id"]: n["text"] for n in woven.ok("tree", "--json").json()["nodes"]}
    assert {k: now[k] for k in old} == old  # the earlier conversation is untouched
    assert made["nodes"][0]["id"] in now


def test_several_models_and_anthropic_gets_the_system_field(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    woven.ok("set", "system", "Be brief.")
    made = run(woven, "say", "-m", "chat", "-m", "claude", "-n", "1", "Hello?")
    assert sorted(n["meta"]["gen"]["model"] for n in made["nodes"]) == ["chat", "claude"]
    anthropic = next(r for r in fake_provider.requests if r.path == "/v1/messages")
    assert anthropic.body["system"] == "Be brief."
    assert anthropic.body["messages"] == [{"role": "user", "content": "Once upon a time\n\nHello?"}]


def test_a_provider_error_keeps_the_replies_that_came(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    models = Path(os.environ["LOOM_HOME"]) / "models.toml"
    models.write_text(
        models.read_text()
        + f'\n[models.single]\nprovider = "openai-chat"\nbase_url = "{fake_provider.openai_url}"\n'
        + 'model = "m"\nkey_env = "FAKE_KEY"\n[models.single.options.capabilities]\nn = false\n'
        + "chat = true\n"
    )
    fake_provider.script(Reply(["Kept."], finish_reason="stop"), Fail(400, "bad request"))
    failed = run(woven, "say", "-m", "single", "-n", "2", "Hi", ok=False)
    assert failed["code"] == 1 and "1 of 2 branch(es) failed" in failed["error"]["error"]["message"]
    [kept] = failed["error"]["error"]["details"]["nodes"]
    assert kept["text"] == "Kept." and kept["kind"] == "assistant"


def test_reply_on_an_assistant_turn_continues_it(woven: Loom, fake_provider: FakeProvider) -> None:
    # This Claude still takes a final assistant message (the shipped table says newer ones do not).
    (Path(os.environ["LOOM_HOME"]) / "capabilities.toml").write_text(
        'version = 1\n[[models]]\nprovider = "anthropic"\nmatch = "claude-x"\nprefill = true\n'
    )
    made = run(woven, "say", "-m", "claude", "-n", "1", "Describe the light.")
    [answer] = made["nodes"]
    fake_provider.script(Reply([" and then it faded."], finish_reason="end_turn"))
    more = run(woven, "reply", answer["id"], "-m", "claude", "-n", "1")
    sent = fake_provider.requests[-1].body["messages"]
    assert sent[-1] == {"role": "assistant", "content": answer["text"].rstrip()}
    [cont] = more["nodes"]
    assert cont["parent"] == answer["id"] and cont["kind"] == "assistant"
    assert cont["text"] == " and then it faded."


def test_an_assistant_turn_that_cannot_be_continued_says_why(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    made = run(woven, "say", "-m", "claude", "-n", "1", "Describe the light.")
    failed = run(woven, "reply", made["nodes"][0]["id"], "-m", "claude", ok=False)
    assert failed["code"] == 1
    assert "cannot continue an assistant turn" in failed["error"]["error"]["message"]


def test_a_base_model_answers_through_a_transcript(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    fake_provider.script(Reply([" Ahoy!\nUser: and more"], finish_reason="stop"))
    made = run(woven, "say", "-m", "base", "-n", "1", "Hi")
    body = fake_provider.requests[-1].body
    assert body["prompt"] == "User: Once upon a time\n\nHi\n\nAssistant:"
    assert "\nUser:" in body["stop"]
    [reply] = made["nodes"]
    assert reply["text"] == "Ahoy!" and reply["meta"]["gen"]["emulation"]["method"] == "transcript"


def test_say_as_user_from_hands_a_text_branch_over(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    woven.ok("add", " there was a fox.")
    node = woven.ok("show", "--json").json()["node"]["id"]
    made = run(woven, "say", "--as-user-from", node, "-m", "chat", "-n", "1")
    assert messages(fake_provider) == [
        {"role": "user", "content": "Once upon a time there was a fox."}
    ]
    [reply] = made["nodes"]
    assert reply["parent"] == node and reply["meta"]["gen"]["mode"] == "as-user"


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["say", ""], 2, "nothing to say"),
        (["say"], 2, "missing TEXT"),
        (["say", "hi", "--emulate", "completion"], 2, "Invalid value for '--emulate'"),
        (["reply", "--emulate", "prefill"], 2, "Invalid value for '--emulate'"),
    ],
)
def test_bad_chat_input_is_one_line(woven: Loom, args: list[str], code: int, fragment: str) -> None:
    before = (woven.cwd / "s.loom.json").read_bytes()
    result = woven(*args, env=woven.env)  # type: ignore[attr-defined]
    assert result.code == code and fragment in result.stderr and result.stderr.count("\n") == 1
    assert (woven.cwd / "s.loom.json").read_bytes() == before


def test_show_prints_turns_and_the_exact_messages(woven: Loom, fake_provider: FakeProvider) -> None:
    woven.ok("set", "system", "Be kind.")
    fake_provider.script(Reply(["Hello there."], finish_reason="stop"))
    run(woven, "say", "-m", "chat", "-n", "1", "Hi")
    transcript = woven.ok("show").stdout  # piped: a transcript
    assert transcript == (
        "System: Be kind.\n\nUser: Once upon a time\n\nHi\n\nAssistant: Hello there.\n"
    )
    shown = woven.ok("show", "--messages", "--json").json()["messages"]
    assert shown == [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Once upon a time\n\nHi"},
        {"role": "assistant", "content": "Hello there."},
    ]
    # The transcript reads back into the same turns.
    back = woven.ok("import", "-", "--new", "back.loom.json", input=transcript)
    assert back.code == 0
    again = json.loads(woven.ok("show", "--messages", "--json", "-f", "back.loom.json").stdout)
    assert again["messages"] == shown


def test_openloom_round_trip_keeps_the_old_tree_and_the_new_turns(
    woven: Loom, fake_provider: FakeProvider, tmp_path: Path
) -> None:
    source = tmp_path / "claude.json"
    shutil.copy(OPENLOOM, source)
    woven.ok("import", str(source), "--new", "o.loom.json")
    before = {n["id"]: (n["text"], n["kind"]) for n in woven.ok("tree", "--json").json()["nodes"]}
    fake_provider.script(Reply(["A new answer."], finish_reason="stop"))
    run(woven, "say", "-m", "chat", "-n", "1", "One more question?")
    exported = tmp_path / "out.json"
    woven.ok("export", "--format", "openloom", "-o", str(exported))
    woven.ok("import", str(exported), "--new", "again.loom.json")
    nodes = woven.ok("tree", "--json").json()["nodes"]
    texts = {(n["text"], n["kind"]) for n in nodes}
    assert ("One more question?", "user") in texts and ("A new answer.", "assistant") in texts
    assert set(before.values()) <= texts  # every old turn is still there, role and all
    assert len(nodes) == len(before) + 2
