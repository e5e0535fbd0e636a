"""The tree window and `ls` pages on every shape a weave grows into: bounded content, not timing.

Three shapes: deep and bushy (each node's parent among the last 50, as an automatic
weave grows), one long chain, and one node with thousands of children. On each,
`loom tree` must fit the terminal (lines and columns) and say what it leaves out.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

import loom
from loom import edit as edit_document
from loom import journal, ops
from loom.cli import render
from loom.document import Document
from loom.view import MAX_RUN, Row, iter_forest, tree_window
from test_render import lines_of, on_terminal

from conftest import Loom

SHAPES = ("bushy", "chain", "wide")


def grow(doc: Document, shape: str, n: int, seed: int = 5) -> list[str]:
    """Add `n` nodes in `shape` (in one transaction, as an importer would); returns their ids."""
    rng = random.Random(seed)
    ids: list[str] = []
    with journal.transaction(doc, "grow"):
        for i in range(n):
            if not ids:
                parent = None
            elif shape == "bushy":
                parent = ids[max(0, len(ids) - rng.randint(1, 50))]
            elif shape == "chain":
                parent = ids[-1]
            else:
                parent = ids[0]
            text = f" {shape} {i} " + "the sea went out " * rng.randint(1, 6)
            ids.append(ops.add_child(doc, parent, text, move_cursor=False).id)
    return ids


@pytest.fixture(scope="module")
def shaped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One 3,000-node document per shape, the cursor on its last (deepest) node."""
    folder = tmp_path_factory.mktemp("shapes")
    out = {}
    for shape in SHAPES:
        path = folder / f"{shape}.loom.json"
        loom.new(path)
        with loom.edit(path) as doc:
            ids = grow(doc, shape, 3000)
            ops.goto(doc, ids[-1] if shape != "wide" else ids[1500])
        out[shape] = path
    return out


def node_rows(rows: list[Row]) -> list[Row]:
    return [r for r in rows if not r.placeholder]


@pytest.mark.parametrize("shape", SHAPES)
def test_the_window_is_bounded_on_every_shape(shaped: dict[str, Path], shape: str) -> None:
    doc = loom.open(shaped[shape])
    focus = doc.cursor_id
    assert focus is not None
    rows = tree_window(doc, focus, height=20)
    assert 2 <= len(rows) <= 20
    assert any(focus in (r.node_id, *r.run) for r in rows)
    assert max(r.indent for r in rows) <= 3 + 3 + 1  # ancestors, subtree, the placeholder
    drawn = {i for r in node_rows(rows) for i in (r.node_id, *r.run)}
    assert len(drawn) <= 20 * MAX_RUN
    path = doc.path_ids(focus)
    if shape in ("bushy", "chain"):
        # Far from the root: the ancestors not drawn are counted in one placeholder.
        top = rows[0]
        assert top.levels_above > 0 and top.indent == 0
        assert top.levels_above + len({*path} & drawn) == len(path)
    if shape == "wide":
        # 2,999 siblings: a few around the focus, the rest counted on either side.
        counted = sum(r.hidden_siblings for r in rows)
        siblings = [r for r in node_rows(rows) if r.indent == rows[-1].indent]
        assert counted + len(siblings) == 2999
        assert len(siblings) <= 5


@pytest.mark.parametrize("shape", SHAPES)
def test_loom_tree_fits_the_terminal_on_every_shape(shaped: dict[str, Path], shape: str) -> None:
    path = shaped[shape]
    result = on_terminal(path.parent, "tree", "-f", path.name, columns=60, rows=16)
    assert result.code == 0, result.stderr
    lines = lines_of(result.stdout)
    assert 2 <= len(lines) <= 15
    assert max(render.text_width(line) for line in lines) < 60
    assert "●" in result.stdout  # the cursor is drawn
    if shape != "wide":
        assert re.search(r"… [\d,]+ levels above", lines[0]), lines[0]
    else:
        assert [line for line in lines if re.search(r"\+[\d,]+ more$", line)]


def test_flags_widen_the_window(shaped: dict[str, Path]) -> None:
    path = shaped["bushy"]
    narrow = lines_of(on_terminal(path.parent, "tree", "-f", path.name, rows=12).stdout)
    wide = on_terminal(
        path.parent, "tree", "-f", path.name, "--above", "40", "--lines", "0", rows=12
    )
    lines = lines_of(wide.stdout)
    assert len(lines) > len(narrow) and len(narrow) <= 11
    levels = re.match(r"… ([\d,]+) levels above", lines[0])
    first = re.match(r"… ([\d,]+) levels above", narrow[0])
    assert levels and first and int(levels[1].replace(",", "")) < int(first[1].replace(",", ""))


def test_tree_all_streams_every_node(shaped: dict[str, Path], loom: Loom) -> None:
    path = shaped["bushy"]
    result = loom.ok("tree", "--all", "--no-collapse", "-f", str(path))
    lines = lines_of(result.stdout)
    assert len(lines) == 3000
    # Deep levels show their number instead of ever more guides: lines stay within the room.
    assert max(render.text_width(line) for line in lines) < 100
    assert any(re.match(r"\d+›", line) for line in lines)


def test_iter_forest_is_lazy_and_depth_first() -> None:
    doc = Document.new()
    a = ops.add_child(doc, None, "a").id
    b = ops.add_child(doc, a, "b").id
    c = ops.add_child(doc, a, "c").id
    d = ops.add_child(doc, b, "d").id
    rows = iter_forest(doc, collapse=False)
    assert next(rows).node_id == a  # a generator: nothing beyond the first row computed yet
    assert [(r.node_id, r.indent, r.is_last) for r in rows] == [
        (b, 1, False),
        (d, 2, True),
        (c, 1, True),
    ]


def test_the_window_shrinks_to_the_height_asked() -> None:
    doc = Document.new()
    ids = grow(doc, "bushy", 2000)
    for height in (3, 5, 8, 13, 30):
        rows = tree_window(doc, ids[-1], height=height, depth=3, width=5)
        assert len(rows) <= max(height, 3)
        assert any(ids[-1] in (r.node_id, *r.run) for r in rows)


def test_a_long_chain_folds_into_bounded_rows() -> None:
    doc = Document.new()
    ids = grow(doc, "chain", 2 * MAX_RUN + 500)
    rows = tree_window(doc, ids[0], depth=3)
    assert [len(r.run) for r in rows] == [0, MAX_RUN, MAX_RUN, 2500 - 3 - 2 * MAX_RUN - 1]
    assert rows[-1].hidden_children == 0
    assert tree_window(doc, ids[0], depth=2)[-1].hidden_children == 1


def test_tree_all_json_is_the_whole_forest_with_deleted_nodes(loom: Loom) -> None:
    loom.ok("new", "s.loom.json", "--text", "The sea")
    loom.ok("add", " went out.")
    shown = loom.ok("show", "--json").json()
    parent, leaf = shown["path"][-2:]
    loom.ok("rm", leaf)
    tree = loom.ok("tree", "--all", "--json").json()
    nodes = {n["id"]: n for n in tree["nodes"]}
    assert leaf in nodes and nodes[leaf]["archived"] is True
    assert nodes[leaf]["parent"] == parent and leaf not in nodes[parent]["children"]  # live ones
    assert set(nodes[leaf]) | {"meta"} == set(shown["node"])  # a list: brief


def test_ls_pages_with_the_total(tmp_path: Path, loom: Loom) -> None:
    path = tmp_path / "w.loom.json"
    loom.ok("new", str(path), "--text", "root")
    with edit_document(path) as doc:
        root = doc.cursor_id
        kids = [ops.add_child(doc, root, f" kid {i}", move_cursor=False).id for i in range(250)]
        ops.archive(doc, kids[0])
    first = loom.ok("ls", "--json").json()
    assert first["total"] == 249 and len(first["nodes"]) == 100
    assert first["next_offset"] == 100 and first["nodes"][0]["id"] == kids[1]
    last = loom.ok("ls", "--json", "--offset", "200", "--limit", "100").json()
    assert [c["id"] for c in last["nodes"]] == kids[201:] and last["next_offset"] is None
    every = loom.ok("ls", "--json", "--all", "-a").json()
    assert every["total"] == 250 and len(every["nodes"]) == 250
    text = lines_of(loom.ok("ls", "--offset", "240").stdout)
    assert len(text) == 10
    assert text[0].lstrip().startswith("241.") and "241–249 of 249 children" in text[-1]
    assert "of 249 children; more with `loom ls --offset 100`" in loom.ok("ls").stdout
