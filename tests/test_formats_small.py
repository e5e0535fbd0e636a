"""Exoloom, Bonsai and nanoloom, built from FORMATS.md's skeletons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from interop_support import by_source_id, fixture, imported, write_json
from loom import formats, store
from loom.errors import DocumentError


def test_exoloom() -> None:
    doc = imported(fixture("exoloom_tree.json"))
    ids = by_source_id(doc)
    assert doc.title == "Tidepool" and doc.description.startswith("Base-model weaving")
    assert doc.full_text(ids["4"]) == "In the tidepool, a crab waved. It had somewhere to be."
    crab = doc.nodes[ids["2"]]
    assert crab["kind"] == "model" and crab["meta"]["gen"]["model"] == "llama-3.1-405b-base"
    assert doc.nodes[ids["1"]].get("kind", "human") == "human"
    assert "bookmark" in doc.nodes[ids["4"]]
    assert doc.nodes[ids["3"]]["archived"] is True  # pruned
    assert doc.data["import"]["exoloom"][0]["fields"]["lens"] == {"zoom": 1.5}


def test_bonsai_dag_and_logprobs() -> None:
    doc = imported(fixture("bonsai_tree.json"))
    ids = by_source_id(doc)
    bloom = doc.nodes[ids["n4"]]
    assert bloom["parent"] == ids["n2"]  # the first of its two parents
    assert bloom["meta"]["import"]["fields"]["parentIds"] == ["n2", "n3"]
    pot = doc.nodes[ids["n2"]]
    assert pot["meta"]["logprobs"]["tokens"] == [" in", " a", " blue", " pot", "."]
    assert pot["meta"]["logprobs"]["top"][2] == [[" red", -1.1], [" blue", -2.3]]
    assert pot["meta"]["gen"]["model"] == "gpt-3.5-turbo-instruct"
    assert pot["tags"] == ["good-ending"]
    assert doc.cursor_id == ids["n4"]
    assert doc.nodes[ids["n1"]]["last_child"] == ids["n2"]  # pathNodes
    assert not doc.nodes[ids["n3"]].get("visited")
    edges = doc.data["import"]["bonsai"][0]["fields"]["edges"]
    assert {"from": "n4", "to": "n1", "relation": "reference"} in edges


def test_bonsai_never_keeps_api_keys(tmp_path: Path) -> None:
    doc = imported(fixture("bonsai_tree.json"))
    path = tmp_path / "b.loom.json"
    store.create(path, doc)
    assert "SECRET" not in path.read_text(encoding="utf-8")


def test_nanoloom() -> None:
    doc = imported(fixture("nanoloom_tapestry.json"))
    ids = by_source_id(doc)
    assert doc.title == "Shuttle test"
    assert doc.cursor_id == ids["g1"]
    warp = doc.nodes[ids["g1"]]
    assert doc.full_text(ids["g1"]) == "The shuttle flew across the warp."
    assert warp["meta"]["logprobs"]["lp"] == [-1.0, -0.2, -0.9, -0.3]
    assert warp["meta"]["gen"]["usage"]["total_tokens"] == 8
    assert warp["meta"]["gen"]["request"] == {"id": "cmpl-abc", "index": 0}
    assert warp["created"] == "2023-11-14T22:13:20.000Z"


@pytest.mark.parametrize(
    ("name", "edit", "phrase"),
    [
        (
            "exoloom_tree.json",
            lambda d: d["tree"].__setitem__("rootNodeId", "9"),
            'rootNodeId "9" is not among the nodes',
        ),
        (
            "exoloom_tree.json",
            lambda d: d["tree"]["nodes"]["2"].__setitem__("childrenIds", [5]),
            'lists child "5" that does not exist',
        ),
        (
            "exoloom_tree.json",
            lambda d: d["lens"].__setitem__("bookmarks", [{"node": 1}]),
            'the "nodeId" of entry 1',
        ),
        (
            "bonsai_tree.json",
            lambda d: d["nodes"][1].__setitem__("parentIds", ["zz"]),
            'parentIds entry "zz", which does not exist',
        ),
        (
            "bonsai_tree.json",
            lambda d: d["nodes"].append(dict(d["nodes"][0])),
            "is used by two nodes",
        ),
        (
            "nanoloom_tapestry.json",
            lambda d: d["tapestry"].__setitem__("root", "nope"),
            'the root "nope" is not among the nodes',
        ),
        (
            "nanoloom_tapestry.json",
            lambda d: (
                d["tapestry"]["nodes"][1].__setitem__("data", None)
                or d["tapestry"]["nodes"][1].__setitem__("parent", 3)
            ),
            'has parent "3", which does not exist',
        ),
    ],
)
def test_damaged(tmp_path: Path, name: str, edit: Any, phrase: str) -> None:
    data = json.loads(fixture(name).read_text(encoding="utf-8"))
    edit(data)
    fmt = name.split("_")[0]
    with pytest.raises(DocumentError) as caught:
        formats.read(write_json(tmp_path / "bad.json", data), format=fmt)
    assert phrase in caught.value.message, caught.value.message
