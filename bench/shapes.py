"""Documents in the shapes real weaves grow into, built fast (straight to JSON, not through ops).

- bushy: each node's parent is one of the last 50 nodes, as an automatic or agent-driven
  weave grows (1M nodes: ~210 MB, the cursor ~39k levels deep);
- chain: one branch;
- wide: one root with every other node as its child (imports, sweeps).

Texts are 7-17 words (~60-100 characters), every other node a model's with a small
generation record, as in bench_store.py. The cursor is on the last node added.

    python bench/shapes.py 1000000 bushy /tmp/bushy-1m.loom.json
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

SHAPES = ("bushy", "chain", "wide")
WORDS = [
    "the",
    "sea",
    "went",
    "out",
    "and",
    "did",
    "not",
    "come",
    "back",
    "for",
    "a",
    "long",
    "time",
    "while",
    "keepers",
    "watched",
    "lamps",
    "burn",
    "low",
]
STAMP = "2026-11-21T13:45:02.123Z"
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _ids(n: int, rng: random.Random) -> list[str]:
    seen: set[str] = set()
    out = []
    while len(out) < n:
        candidate = "".join(rng.choice(_ALPHABET) for _ in range(12))
        if candidate not in seen:
            seen.add(candidate)
            out.append(candidate)
    return out


def build(n: int, shape: str, seed: int = 1) -> dict[str, Any]:
    """A schema-1 loom document (any loom reads it) of `n` nodes in `shape`."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r} (one of {', '.join(SHAPES)})")
    rng = random.Random(seed)
    ids = _ids(n, rng)
    nodes: dict[str, dict[str, Any]] = {}
    roots: list[str] = []
    for i, node_id in enumerate(ids):
        text = " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(7, 17)))
        rec: dict[str, Any] = {"text": text, "created": STAMP, "modified": STAMP}
        if i % 2:
            rec["kind"] = "model"
            rec["meta"] = {"gen": {"model": "gemma-3-270m", "params": {"temperature": 0.9}}}
        if i == 0:
            parent = None
        elif shape == "bushy":
            parent = ids[max(0, i - rng.randint(1, 50))]
        elif shape == "chain":
            parent = ids[i - 1]
        else:
            parent = ids[0]
        if parent is None:
            roots.append(node_id)
        else:
            rec["parent"] = parent
            nodes[parent].setdefault("children", []).append(node_id)
        nodes[node_id] = rec
    cursor = ids[-1]
    # The path to the cursor was visited, as it would have been by the weave that grew it.
    current: str | None = cursor
    while current is not None:
        rec = nodes[current]
        rec["visited"] = True
        parent = rec.get("parent")
        if parent is not None:
            nodes[parent]["last_child"] = current
        current = parent
    return {
        "format": "loom",
        "version": 1,
        "id": "benchdocument",
        "created": STAMP,
        "modified": STAMP,
        "title": f"{shape} {n}",
        "roots": roots,
        "cursor": cursor,
        "nodes": nodes,
        "journal": {"undo": [], "redo": []},
    }


def write(n: int, shape: str, path: Path) -> Path:
    """Build and write a document; as another tool would (one orjson dump, no loom index)."""
    import orjson

    data = build(n, shape)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE))
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    write(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
