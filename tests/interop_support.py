"""Helpers shared by the import/export/ingest tests: fixtures, tree signatures, the CLI."""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom import formats
from loom.document import Document
from loom.formats.forest import graft

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def fixture(name: str) -> Path:
    return FIXTURES / name


def imported(path: Path | str, **kwargs: Any) -> Document:
    """A new in-memory document holding the import of `path`."""
    doc = Document.new()
    graft(doc, formats.read(path, **kwargs))
    return doc


def by_source_id(doc: Document) -> dict[str, str]:
    """Source id -> loom id, from meta.import."""
    out: dict[str, str] = {}
    for node_id, rec in doc.nodes.items():
        source = rec.get("meta", {}).get("import", {}).get("id")
        if source is not None:
            out[source] = node_id
    return out


def signature(doc: Document, *, archived: bool = True) -> list[tuple[Any, ...]]:
    """The tree as (position path, text, kind, bookmark, archived, tags) rows, in order."""
    rows: list[tuple[Any, ...]] = []
    stack: list[tuple[str, tuple[int, ...]]] = [
        (r, (i,)) for i, r in reversed(list(enumerate(doc.root_ids)))
    ]
    while stack:
        node_id, position = stack.pop()
        rec = doc.nodes[node_id]
        if rec.get("archived") and not archived:
            continue
        rows.append(
            (
                position,
                rec.get("text", ""),
                rec.get("kind", "human"),
                rec.get("bookmark"),
                bool(rec.get("archived")),
                tuple(rec.get("tags", ())),
            )
        )
        kids = rec.get("children", [])
        stack.extend((c, (*position, i)) for i, c in reversed(list(enumerate(kids))))
    return rows


def cursor_position(doc: Document) -> tuple[int, ...] | None:
    """Where the cursor is, as child indices from the root list (ids differ between imports)."""
    cursor = doc.cursor_id
    if cursor is None:
        return None
    path = doc.path_ids(cursor)
    out = [doc.root_ids.index(path[0])]
    for upper, lower in itertools.pairwise(path):
        out.append(doc.nodes[upper]["children"].index(lower))
    return tuple(out)


def longest_path(doc: Document) -> int:
    """Nodes on the longest root-to-leaf path."""
    best = 0
    stack = [(r, 1) for r in doc.root_ids]
    while stack:
        node_id, depth = stack.pop()
        best = max(best, depth)
        stack.extend((c, depth + 1) for c in doc.nodes[node_id].get("children", ()))
    return best


def widest(doc: Document) -> int:
    return max((len(r.get("children", ())) for r in doc.nodes.values()), default=0)


def build_basemode_db(path: Path) -> Path:
    conn = sqlite3.connect(path)
    try:
        conn.executescript(fixture("basemode_store.sql").read_text(encoding="utf-8"))
        conn.commit()
    finally:
        conn.close()
    return path


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")  # ASCII escapes keep lone surrogates
    return path


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error(self) -> Any:
        return json.loads(self.stdout)


def cli(cwd: Path, *args: str, input: bytes | str | None = None, timeout: float = 60) -> Run:
    """`loom ARGS` (`python -m loom`) as a real subprocess in `cwd` (LOOM_HOME comes from the test's environment)."""
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(
        [sys.executable, "-m", "loom", *args],
        cwd=cwd,
        input=data,
        capture_output=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=timeout,
    )
    return Run(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


def shared_response_tree(nodes: int = 1000, tokens: int = 6400, alternatives: int = 5) -> Any:
    """A hostile pyloom tree: every node points at one big model response.

    Half the nodes were "edited" (their text no longer matches the completion), half
    keep the completion's first three tokens; the response carries `tokens` tokens
    with `alternatives` counterfactuals each (1,000 × 6,400 × 5 is about 1.25 MB).
    """
    rid = "cmpl-shared"
    entries = []
    offset = 0
    for i in range(tokens):
        token = f" w{i}"
        entries.append(
            {
                "generatedToken": {"token": token, "logprob": -0.25},
                "position": {"start": offset, "end": offset + len(token)},
                "counterfactuals": {f" a{j}": -1.0 - j for j in range(alternatives)},
            }
        )
        offset += len(token)
    completion = "".join(e["generatedToken"]["token"] for e in entries)
    head = "".join(e["generatedToken"]["token"] for e in entries[:3])
    children = [
        {
            "id": f"n{i}",
            "text": head if i % 2 else f" edited {i}",
            "generation": {"id": rid, "index": 0},
            "children": [],
        }
        for i in range(nodes)
    ]
    response = {
        "id": rid,
        "model": "davinci",
        "timestamp": "2023-02-14-18.16.30",
        "prompt": {"text": "Once", "tokens": []},
        "completions": [{"text": completion, "finishReason": "length", "tokens": entries}],
    }
    return {
        "root": {"id": "root", "text": "Once", "children": children},
        "model_responses": {rid: response},
    }
