"""SVG snapshots of the TUI's main screens at 80×24 (pytest-textual-snapshot).

A failing snapshot writes a report comparing both pictures (snapshot_report.html);
after a deliberate change, refresh them with `pytest tests/test_tui_snapshots.py
--snapshot-update` and look at every changed SVG before committing it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("textual", reason="the [tui] extra is not installed")

import loom
from loom import ops

from tui_support import story, with_logprobs


@pytest.fixture(autouse=True)
def colour(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Snapshots in colour (conftest turns NO_COLOR on for the CLI tests); fixed theme."""
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("LOOM_THEME", raising=False)
    yield


@pytest.fixture
def doc_path(tmp_path: Path) -> Path:
    path = tmp_path / "story.loom.json"
    story(path, fixed=True)
    return path


def app_for(path: Path, **kwargs: Any) -> Any:
    from loom.tui import make_app

    return make_app(path, **kwargs)


def test_branch_view(doc_path: Path, snap_compare: Any) -> None:
    """The branch with its ▏ node boundary, the current node emphasised, three unread
    children numbered 1-3, the tree pane, the status line and the key hints."""
    assert snap_compare(app_for(doc_path))


def test_tree_pane_on_a_bushier_tree(doc_path: Path, snap_compare: Any) -> None:
    """Siblings along the path, folded runs (×N), hidden children (+N), a bookmark."""
    with loom.edit(doc_path) as doc:
        walk = doc.cursor_id
        assert walk is not None
        parent = walk
        for i in range(4):
            parent = ops.add_child(
                doc, parent, f" chain {i}.", node_id=f"chain{i}" + "0" * 7, move_cursor=False
            ).id
        for i in range(9):
            ops.add_child(doc, walk, f" wide {i}.", node_id=f"wide{i}" + "0" * 8, move_cursor=False)
        ops.set_bookmark(doc, walk)
    assert snap_compare(app_for(doc_path), press=["1"])


def test_help_overlay(doc_path: Path, snap_compare: Any) -> None:
    assert snap_compare(app_for(doc_path), press=["question_mark"])


def test_probabilities_and_the_token_cursor(doc_path: Path, snap_compare: Any) -> None:
    """Tokens coloured by probability with the legend; the token cursor on ' tide'."""
    with_logprobs(doc_path, "w1" * 6, node_id="p" * 12)
    assert snap_compare(app_for(doc_path), press=["o"])


def test_split_cursor(doc_path: Path, snap_compare: Any) -> None:
    assert snap_compare(app_for(doc_path), press=["s"])


def test_light_theme(doc_path: Path, snap_compare: Any) -> None:
    assert snap_compare(app_for(doc_path, theme="textual-light"))


def test_no_color(doc_path: Path, snap_compare: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR: greys only; node boundaries still show as ▏ marks."""
    monkeypatch.setenv("NO_COLOR", "1")
    assert snap_compare(app_for(doc_path))


def test_generation_in_progress(doc_path: Path, snap_compare: Any) -> None:
    """Branches streaming into the children list after the real children: one finished,
    one still coming, one failed with its reason."""
    from loom.tui.widgets.children import ChildrenList, Stream

    async def run_before(pilot: Any) -> None:
        app = pilot.app
        app.streams = [
            Stream(" The tide came back at noon.", "done", "stop"),
            Stream(" By noon the fishermen had gathered", "streaming", "base"),
            Stream("", "failed", "429 rate limited (after 3 tries)"),
        ]
        app.query_one(ChildrenList).set_streams(app.streams)

    assert snap_compare(app_for(doc_path), run_before=run_before)
