"""The async generation core through the library: in a running loop, text and messages,
events, cancellation, concurrency, `max_n`, one read per generation. A real local server."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

import loom
from loom.generation import events as ev

from conftest import KEY, Loom
from fakeprovider import FakeProvider, Reply


@pytest.fixture
def story(woven: Loom, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The woven document, with the fake provider's key in this process's environment."""
    monkeypatch.setenv("FAKE_KEY", KEY)
    return woven.cwd / "s.loom.json"


def test_agenerate_runs_inside_a_running_loop_and_streams_token_events(
    story: Path, fake_provider: FakeProvider
) -> None:
    fake_provider.script(Reply([" there was", " a fox"], finish_reason="stop"))
    seen: list[ev.Event] = []

    async def main() -> loom.Generation:
        asyncio.get_running_loop()  # a loop is running, as in a TUI or a server
        request = loom.GenerationRequest(n=2, models=("base",))
        return await loom.agenerate(story, request, events=seen.append)

    result = asyncio.run(main())
    result.check()
    texts = sorted(n.text for n in result.nodes)
    assert len(texts) == 2 and all(t.strip() for t in texts)
    deltas: dict[int, str] = {}
    for event in seen:
        if isinstance(event, ev.TextDelta):
            deltas[event.index] = deltas.get(event.index, "") + event.text
    assert sorted(deltas.values()) == texts  # the stream spelled out what was written
    kinds = [e.kind for e in seen]
    assert kinds[0] == "planned" and seen[0].to_dict() == {
        "event": "planned",
        "models": ["base", "base"],
    }
    assert kinds.count("started") == 2 and kinds.count("finished") == 2
    assert kinds[-1] == "written" and set(seen[-1].to_dict()["node_ids"]) == {  # type: ignore[attr-defined]
        n.id for n in result.nodes
    }
    assert loom.open(story).node(result.nodes[0].id).parent_id == result.parent


def test_a_rejected_output_is_announced_and_its_retry_streams_under_its_own_index(
    story: Path, fake_provider: FakeProvider
) -> None:
    """A front end painting streams must learn the first text was thrown away."""
    fake_provider.script(
        Reply(["I'm sorry, but I can't help with continuing this text."], finish_reason="stop"),
        Reply(["did not return for a week."], finish_reason="stop"),
    )
    seen: list[ev.Event] = []
    request = loom.GenerationRequest(n=1, models=("chat",))
    result = loom.generate(story, request, events=seen.append)
    result.check()
    [node] = result.nodes
    assert node.text == " did not return for a week."
    kinds = [e.kind for e in seen]
    assert kinds.count("planned") == 1 and kinds.count("started") == 2
    retry = kinds.index("retrying")
    assert kinds.index("started") < retry < len(kinds) - 1 - kinds[::-1].index("started")
    [retrying] = [e for e in seen if isinstance(e, ev.Retrying)]
    assert retrying.indexes == (0,) and "refusal" in retrying.reason
    after = "".join(e.text for e in seen[retry:] if isinstance(e, ev.TextDelta))
    assert after.strip() == "did not return for a week."
    assert all(e.index == 0 for e in seen if isinstance(e, (ev.TextDelta, ev.BranchFinished)))


def test_agenerate_sends_messages_and_replies_as_the_assistant(
    story: Path, fake_provider: FakeProvider
) -> None:
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Tell me a story."},
    ]
    context = loom.Context.of_messages(turns, system="Be brief.")
    fake_provider.script(Reply(["Once, a fox."], finish_reason="stop"))

    async def main() -> loom.Generation:
        request = loom.GenerationRequest(n=1, models=("chat",), context=context)
        return await loom.agenerate(story, request)

    result = asyncio.run(main())
    result.check()
    body = fake_provider.requests[-1].body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Tell me a story."},
    ]
    [node] = result.nodes
    assert node.kind == "assistant" and node.text == "Once, a fox."
    gen = node.meta["gen"]
    assert gen["emulation"]["method"] == "chat" and gen["mode"] == "chat"
    assert gen["prompt"]["messages"] == 4


def test_a_chat_branch_becomes_its_turns(story: Path, fake_provider: FakeProvider) -> None:
    with loom.edit(story) as doc:
        root = doc.cursor_id
        loom.ops.set_document_field(doc, "system", "You are terse.")
        user = loom.ops.add_child(doc, root, "What is a fox?", kind="user")
        assistant = loom.ops.add_child(doc, user.id, "An animal", kind="assistant")
        more = loom.ops.add_child(doc, assistant.id, ", quick and red.", kind="model")
        question = loom.ops.add_child(doc, more.id, "And a hound?", kind="user")
    fake_provider.script(Reply(["A dog."], finish_reason="stop"))
    request = loom.GenerationRequest(node=question.id, n=1, models=("chat",), mode="chat")
    result = loom.generate(story, request)
    result.check()
    assert fake_provider.requests[-1].body["messages"] == [
        {"role": "system", "content": "You are terse."},
        # The plain text before the first turn, then the person's question.
        {"role": "user", "content": "Once upon a time\n\nWhat is a fox?"},
        {"role": "assistant", "content": "An animal, quick and red."},  # joined turns
        {"role": "user", "content": "And a hound?"},
    ]
    assert result.nodes[0].meta["gen"]["prompt"]["turns"][-1] == [question.id]


def test_a_base_model_replies_to_a_conversation_through_a_transcript(
    story: Path, fake_provider: FakeProvider
) -> None:
    context = loom.Context.of_messages([{"role": "user", "content": "Say hi."}])
    fake_provider.script(Reply([" Hi there!\nUser: and then"], finish_reason="stop"))
    result = loom.generate(None, loom.GenerationRequest(n=1, models=("base",), context=context))
    result.check()
    body = fake_provider.requests[-1].body
    assert body["prompt"] == "User: Say hi.\n\nAssistant:"
    assert "\nUser:" in body["stop"]
    assert result.nodes == [] and [o.text for o in result.kept] == ["Hi there!"]


def test_cancelling_keeps_the_finished_branches(story: Path, fake_provider: FakeProvider) -> None:
    models = Path(os.environ["LOOM_HOME"]) / "models.toml"
    models.write_text(
        models.read_text()
        + f'\n[models.single]\nprovider = "openai"\nbase_url = "{fake_provider.openai_url}"\n'
        + 'model = "m"\nkey_env = "FAKE_KEY"\n[models.single.options.capabilities]\nn = false\n'
    )
    fake_provider.script(
        Reply([" fast"], finish_reason="stop"),
        Reply([" slow " * 100], chunk_delay=0.2, finish_reason="stop"),
    )
    seen: list[ev.Event] = []

    async def main() -> None:
        request = loom.GenerationRequest(n=2, models=("single",))
        task = asyncio.create_task(loom.agenerate(story, request, events=seen.append))
        while not any(isinstance(e, ev.BranchFinished) for e in seen):
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    [written] = [e for e in seen if isinstance(e, ev.Written)]
    assert written.interrupted and len(written.node_ids) == 1
    doc = loom.open(story)
    assert doc.node(written.node_ids[0]).text == " fast"


def test_a_sixteen_child_sweep_runs_in_one_wave(story: Path, fake_provider: FakeProvider) -> None:
    fake_provider.latency = 0.5
    request = loom.GenerationRequest(
        n=16, models=("base",), modulation={"sweep": "temperature=0.5:1.25"}
    )
    result = loom.generate(story, request)
    result.check()
    assert len(fake_provider.requests) == 16  # distinct parameters: one request each
    assert fake_provider.max_in_flight == 16


def test_a_model_that_takes_one_sample_per_request_gets_n_requests(
    story: Path, fake_provider: FakeProvider
) -> None:
    (Path(os.environ["LOOM_HOME"]) / "capabilities.toml").write_text(
        'version = 1\n[[models]]\nprovider = "*"\nmatch = "base-1"\nmax_n = 1\n'
    )
    result = loom.generate(story, loom.GenerationRequest(n=3, models=("base",)))
    result.check()
    assert len(result.nodes) == 3
    assert [r.body.get("n", 1) for r in fake_provider.requests] == [1, 1, 1]


def test_the_document_is_read_once_plus_once_under_the_lock(
    story: Path, fake_provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loom import store

    reads: list[Any] = []
    real_load = store.load

    def counting(path: Any, **kwargs: Any) -> Any:
        reads.append(path)
        return real_load(path, **kwargs)

    monkeypatch.setattr(store, "load", counting)
    loom.generate(story, loom.GenerationRequest(n=2, models=("base",))).check()
    assert len(reads) == 2  # the snapshot to plan from, and the fresh read to write into


def test_a_remote_record_says_what_was_left_to_the_provider(
    story: Path, fake_provider: FakeProvider
) -> None:
    result = loom.generate(
        story, loom.GenerationRequest(n=1, models=("base",), params={"temperature": 0.6})
    )
    sampler = result.nodes[0].meta["gen"]["sampler"]
    assert sampler["values"] == {"temperature": 0.6}
    assert (
        "top_p" in sampler["left_to_provider"] and "temperature" not in sampler["left_to_provider"]
    )


def test_generate_refuses_to_run_inside_a_loop(story: Path) -> None:
    async def main() -> None:
        with pytest.raises(loom.UsageError, match=r"await loom\.agenerate"):
            loom.generate(story, loom.GenerationRequest())

    asyncio.run(main())


def test_say_refuses_to_run_inside_a_loop_before_writing_the_turn(story: Path) -> None:
    before = story.read_bytes()

    async def main() -> None:
        with pytest.raises(loom.UsageError, match=r"await loom\.chat\.asay"):
            loom.chat.say(story, "hello", loom.GenerationRequest())

    asyncio.run(main())
    assert story.read_bytes() == before


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n": 0}, "n must be"),
        ({"modulation": 5}, "modulation must be"),
        ({"context": "a prompt"}, "context must be a loom.Context"),
        ({"cursor": "middle"}, "cursor must be"),
        ({"timeout": -1}, "timeout must be"),
        ({"modulation": {"wobble": "x"}}, "unknown modulation"),
        ({"emulate": "telepathy"}, "emulate must be"),
    ],
)
def test_a_bad_request_is_a_usage_error(story: Path, fields: dict[str, Any], message: str) -> None:
    before = story.read_bytes()
    with pytest.raises(loom.UsageError, match=message):
        loom.generate(story, loom.GenerationRequest(**fields))
    assert story.read_bytes() == before


@pytest.mark.parametrize(
    ("flags", "per_cell", "random"),
    [
        ({"grid": "temperature=0.5,1", "per_cell": "2"}, 2, False),
        ({"random_preset": "false"}, None, False),
        ({"random_preset": "yes"}, None, True),
        ({"random_preset": True}, None, True),
    ],
)
def test_modulation_flags_given_as_text_are_typed(
    flags: dict[str, Any], per_cell: int | None, random: bool
) -> None:
    """per_cell "2" crashed comparing a string with 1; random_preset "false" turned random
    presets on (a non-empty string is true)."""
    specs = loom.GenerationRequest(modulation=flags).checked().modulation
    assert specs.per_cell == per_cell and specs.random_preset is random


@pytest.mark.parametrize(
    "flags", [{"grid": "temperature=0.5,1", "per_cell": "two"}, {"random_preset": "maybe"}]
)
def test_bad_modulation_flags_are_usage_errors(flags: dict[str, Any]) -> None:
    with pytest.raises(loom.UsageError, match=r"per_cell|random_preset"):
        loom.GenerationRequest(modulation=flags).checked()


def test_the_tui_takes_every_modulation_loom_gen_takes() -> None:
    from loom.tui.generation import Settings, parse_modulation

    pairs = parse_modulation("grid temperature=0.5,1; per-cell 2; random_preset")
    specs = Settings(modulation=pairs).request().modulation
    assert specs.per_cell == 2 and specs.random_preset is True


def test_no_models_is_the_default_model() -> None:
    assert loom.GenerationRequest(models=None).models == ()


def test_a_document_in_memory_gets_its_children_in_memory(fake_provider: FakeProvider) -> None:
    doc = loom.Document.new()
    loom.ops.add_child(doc, None, "Once")
    os.environ["FAKE_KEY"] = KEY
    try:
        loom.config.add_model(
            "mem", {"provider": "openai", "model": "m", "base_url": fake_provider.openai_url}
        )
        result = loom.generate(doc, loom.GenerationRequest(n=2, models=("mem",), cursor="last"))
    finally:
        del os.environ["FAKE_KEY"]
    result.check()
    assert [n.id in doc.nodes for n in result.nodes] == [True, True]
    assert doc.cursor_id == result.nodes[-1].id == result.cursor and doc.dirty
    loom.undo(doc)
    assert not any(n.id in doc.nodes for n in result.nodes)
