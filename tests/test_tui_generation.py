"""Generating from the TUI, against the real local test server (tests/fakeprovider.py):
streaming several branches into the children list, Escape keeping finished branches,
regeneration, provider errors in the status line, and the generation panel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("textual", reason="the [tui] extra is not installed")

from loom import store
from loom.tui.widgets.children import ChildrenList

from conftest import KEY, Loom
from fakeprovider import Fail, FakeProvider, Reply
from tui_support import drive, screen_text, until


@pytest.fixture
def doc(woven: Loom, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The woven document (models on the fake server), its key in this process's environment."""
    monkeypatch.setenv("FAKE_KEY", KEY)
    monkeypatch.chdir(woven.cwd)
    return woven.cwd / "s.loom.json"


def children_texts(path: Path) -> list[str]:
    on_disk = store.load(path)
    cursor = on_disk.cursor_id
    assert cursor is not None
    return [on_disk.nodes[c]["text"] for c in on_disk.live_child_ids(cursor)]


def test_g_streams_several_branches_into_the_children_list(
    doc: Path, fake_provider: FakeProvider
) -> None:
    fake_provider.script(
        Reply([" the sea came back.", " the gulls were silent.", " he slept."], chunk_delay=0.05)
    )
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        app.settings = type(app.settings)(n=3)
        await pilot.press("g")
        # Mid-stream: rows that are not nodes yet, with the text that has come so far.
        seen["streaming"] = await until(
            pilot, lambda: any(s.text and s.state == "streaming" for s in app.streams), 10
        )
        seen["mid_screen"] = screen_text(app)
        await pilot.press("b")  # keys still work (and save) while it streams
        seen["done"] = await until(
            pilot, lambda: len(app.query_one(ChildrenList).ids) == 3 and not app.streams, 20
        )
        seen["screen"] = screen_text(app)

    app = drive(doc, script)
    assert seen["streaming"], "no branch was seen streaming"
    assert "generating" in seen["mid_screen"]
    assert seen["done"]
    assert sorted(children_texts(doc)) == sorted(
        [" the sea came back.", " the gulls were silent.", " he slept."]
    )
    assert "the gulls were silent." in seen["screen"]
    assert app.last_error is None
    assert fake_provider.requests[0].body["n"] == 3  # one request for the three
    root = store.load(doc).cursor_id
    assert root is not None and "bookmark" in store.load(doc).nodes[root]  # both writes kept


def test_escape_stops_and_keeps_the_finished_branches(
    doc: Path, fake_provider: FakeProvider
) -> None:
    long = " and on" * 100
    # A sweep makes two requests (different temperatures): one quick, one slow.
    fake_provider.script(Reply([" short."]), Reply([long], chunk_delay=0.1))
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        app.settings = type(app.settings)(n=2, modulation=(("sweep", "temperature=0.5:0.9"),))
        await pilot.press("ctrl+@")
        seen["one_done"] = await until(
            pilot, lambda: any(s.state == "done" for s in app.streams), 15
        )
        seen["states"] = [(s.state, s.text[:20], s.note) for s in app.streams]
        await pilot.press("escape")
        seen["stopped"] = await until(pilot, lambda: not app.runner.running and not app.streams, 15)

    drive(doc, script)
    assert seen["one_done"], seen["states"]
    assert seen["stopped"]
    assert children_texts(doc) == [" short."]


def test_escape_right_after_g_stops_the_generation(doc: Path, fake_provider: FakeProvider) -> None:
    """Escape before the generation's thread had set up its loop used to be ignored (the
    generation ran on as if nothing was pressed). A thread slow to start makes that moment
    certain here."""
    import asyncio
    import threading

    from loom.generation.request import GenerationRequest
    from loom.tui.generation import Finished, Runner

    go = threading.Event()

    class SlowToStart(Runner):
        async def _run(self, path: Path, request: GenerationRequest) -> None:
            await asyncio.to_thread(go.wait, 10)
            await super()._run(path, request)

    async def main() -> tuple[bool, list[Any]]:
        got: list[Any] = []
        runner = SlowToStart(got.append, asyncio.get_running_loop())
        runner.start(doc, GenerationRequest(n=2))
        asked = runner.cancel()
        go.set()
        while not any(isinstance(item, Finished) for item in got):
            await asyncio.sleep(0.01)
        runner.join(10)
        runner.close()
        return asked, got

    asked, got = asyncio.run(main())
    assert asked
    [finished] = [item for item in got if isinstance(item, Finished)]
    assert finished.cancelled and finished.error is None
    assert fake_provider.requests == []
    assert children_texts(doc) == []


def test_generations_share_the_backends_the_app_keeps(
    doc: Path, fake_provider: FakeProvider
) -> None:
    """Each generation made (and closed) its own backends: a new connection every time,
    and the embedded model loaded again for every g (~2 s). (A model that does not stream:
    a streamed reply's connection is not reused by the HTTP backend either way.)"""
    import os

    models = Path(os.environ["LOOM_HOME"]) / "models.toml"
    models.write_text(
        models.read_text()
        + f'\n[models.whole]\nprovider = "openai"\nbase_url = "{fake_provider.openai_url}"\n'
        + 'model = "m"\nkey_env = "FAKE_KEY"\n[models.whole.options]\nstream = false\n'
    )
    fake_provider.script(Reply([" first."]), Reply([" second."]))

    async def script(app: Any, pilot: Any) -> None:
        app.settings = type(app.settings)(model="whole", n=1)
        await pilot.press("g")
        await until(pilot, lambda: len(app.query_one(ChildrenList).ids) == 1, 15)
        await pilot.press("g")
        await until(pilot, lambda: len(app.query_one(ChildrenList).ids) == 2, 15)

    app = drive(doc, script)
    assert sorted(children_texts(doc)) == [" first.", " second."]
    first, second = fake_provider.requests
    assert first.client == second.client  # one connection, kept between generations
    assert app.runner is not None and not app.runner.running


def test_a_failing_provider_is_one_line_in_the_status_line(
    doc: Path, fake_provider: FakeProvider
) -> None:
    fake_provider.script(Fail(401))
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("g")
        seen["error"] = await until(pilot, lambda: app.last_error is not None, 15)
        seen["screen"] = screen_text(app)

    app = drive(doc, script)
    assert seen["error"]
    assert "generation failed" in app.last_error
    assert "generation failed" in seen["screen"]
    assert children_texts(doc) == []


def test_regenerate_makes_new_siblings(doc: Path, fake_provider: FakeProvider) -> None:
    fake_provider.script(Reply([" first."]), Reply([" again."]))

    async def script(app: Any, pilot: Any) -> None:
        app.settings = type(app.settings)(n=1)
        await pilot.press("g")
        await until(pilot, lambda: len(app.query_one(ChildrenList).ids) == 1, 15)
        await pilot.press("1", "R")
        await until(pilot, lambda: len(app.query_one(ChildrenList).ids) == 2, 15)

    app = drive(doc, script)
    assert sorted(children_texts(doc)) == [" again.", " first."]
    assert app.last_error is None


def test_the_panel_sets_the_next_generation_and_explains_it(
    doc: Path, fake_provider: FakeProvider
) -> None:
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("G")
        seen["panel"] = screen_text(app)
        await pilot.click("#n")
        await pilot.press(*"2")
        await pilot.click("#modulation")
        await pilot.press(*"sweep temperature=0.6:1.4")
        await pilot.pause()
        seen["explain"] = screen_text(app)
        await pilot.press("ctrl+s")
        seen["status"] = screen_text(app)
        await pilot.press("g")
        await until(pilot, lambda: len(app.query_one(ChildrenList).ids) == 2, 15)

    drive(doc, script, size=(100, 40))
    assert "Next generation" in seen["panel"]
    assert "temperature" in seen["explain"]  # what `loom params --explain` would say
    assert "n=2 · sweep" in seen["status"]
    temperatures = sorted(r.body.get("temperature") for r in fake_provider.requests)
    assert temperatures == [0.6, 1.4]  # the sweep reached the wire


def test_a_bad_modulation_is_refused_in_the_panel(doc: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        before = app.settings
        await pilot.press("G")
        await pilot.click("#modulation")
        await pilot.press(*"wobble temperature=1")
        await pilot.press("ctrl+s")
        seen["screen"] = screen_text(app)
        seen["kept"] = app.settings == before
        await pilot.press("escape")

    drive(doc, script, size=(100, 40))
    assert "a modulation is one of" in seen["screen"]
    assert seen["kept"]


def test_a_digit_int_cannot_read_is_refused_in_the_panel(doc: Path) -> None:
    """'²' passed str.isdigit() and crashed the app in int()."""
    seen: dict[str, Any] = {}

    async def script(app: Any, pilot: Any) -> None:
        await pilot.press("G")
        await pilot.click("#n")
        await pilot.press("²")
        seen["screen"] = screen_text(app)
        await pilot.press("escape")

    drive(doc, script, size=(100, 40))
    assert "n must be a whole number from 1, got '²'" in seen["screen"]
