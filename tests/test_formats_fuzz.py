"""Fuzz: damaged versions of real files give clean one-line LoomErrors, or a valid import.

Mutations are seeded and bounded: truncation, flipped bytes, deleted keys and
values swapped for other types. An importer must never crash with a Python
error, nor fall back to the read_bytes safety net (which would mean a value went
unchecked), and whatever it accepts must graft into a document that saves.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from interop_support import build_basemode_db, fixture, imported
from loom import formats, store
from loom.document import Document
from loom.errors import LoomError
from loom.formats.forest import graft

SEED = 20261121
ODD_VALUES: list[Any] = [
    None,
    0,
    -1,
    2.5,
    1e308,
    "",
    "x",
    "\ud800",
    [],
    {},
    True,
    [1, "a"],
    {"a": None},
]
FILES = [
    ("openloom_existence_of_claude.json", 120),
    ("pyloom_teleology.json", 120),
    ("pyloom_loom_demo.json", 20),
    ("loomsidian_data.json", 150),
    ("basemode_export.json", 150),
    ("miniloom_fox.json", 200),
    ("exoloom_tree.json", 150),
    ("bonsai_tree.json", 150),
    ("nanoloom_tapestry.json", 150),
]


def _containers(data: Any) -> list[Any]:
    out, stack = [], [data]
    while stack:
        current = stack.pop()
        if isinstance(current, dict | list):
            out.append(current)
            stack.extend(current.values() if isinstance(current, dict) else current)
    return out


def _mutate_structure(raw: bytes, rng: random.Random) -> bytes:
    data = json.loads(raw)
    for _ in range(rng.randint(1, 3)):
        containers = [c for c in _containers(data) if c]
        if not containers:
            break
        target = rng.choice(containers)
        key = rng.choice(list(target)) if isinstance(target, dict) else rng.randrange(len(target))
        if rng.random() < 0.4 and isinstance(target, dict):
            del target[key]
        else:
            target[key] = copy.deepcopy(rng.choice(ODD_VALUES))
    return json.dumps(data).encode()


def _mutate(raw: bytes, rng: random.Random) -> bytes:
    how = rng.randrange(3)
    if how == 0:
        return raw[: rng.randrange(len(raw))]
    if how == 1:
        data = bytearray(raw)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    return _mutate_structure(raw, rng)


def _check(payload: bytes, name: str, fmt: str | None, tmp_path: Path) -> None:
    try:
        forest = formats.read_bytes(payload, name, format=fmt)
    except LoomError as exc:
        assert "\n" not in exc.message, exc.message
        assert " unreadable " not in exc.message, (
            f"an unchecked value reached the safety net: {exc.message}"
        )
        return
    doc = Document.new()
    try:
        graft(doc, forest)
    except LoomError as exc:  # pragma: no cover - read_bytes validates the forest
        pytest.fail(f"graft refused a forest read_bytes accepted: {exc.message}")
    store.validate(doc.data)
    store.parse(store.encode(doc))  # it saves, and loads back


@pytest.mark.parametrize(("name", "count"), FILES)
def test_mutated_files(tmp_path: Path, name: str, count: int) -> None:
    raw = fixture(name).read_bytes()
    rng = random.Random(f"{SEED}/{name}")
    detected = formats.read_bytes(raw, name).format
    for i in range(count):
        payload = _mutate(raw, rng)
        _check(payload, f"fuzz-{i}", None, tmp_path)
        _check(payload, f"fuzz-{i}", detected, tmp_path)


def test_mutated_response_backups(tmp_path: Path) -> None:
    raw = fixture("pyloom_teleology_model_responses_2.json").read_bytes()
    rng = random.Random(f"{SEED}/responses")
    for i in range(15):
        path = tmp_path / f"model_responses-{i}.json"
        path.write_bytes(_mutate(raw, rng))
        try:
            forest = formats.read(fixture("pyloom_teleology.json"), responses=[path])
        except LoomError as exc:
            assert "\n" not in exc.message and " unreadable " not in exc.message, exc.message
            continue
        graft(Document.new(), forest)


def test_mutated_native_files(tmp_path: Path) -> None:
    doc = imported(fixture("exoloom_tree.json"))
    rng = random.Random(f"{SEED}/native")
    for fmt, payload in (("loom", store.encode(doc)), ("jsonl", formats.export(doc, "jsonl"))):
        for i in range(150):
            mutated = _mutate(payload, rng) if fmt == "loom" else _mutate_lines(payload, rng)
            _check(mutated, f"fuzz-{fmt}-{i}", fmt, tmp_path)


def _mutate_lines(payload: bytes, rng: random.Random) -> bytes:
    lines = payload.splitlines()
    i = rng.randrange(len(lines))
    try:
        lines[i] = _mutate_structure(lines[i], rng)
    except json.JSONDecodeError:
        lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
    return b"\n".join(lines)


def test_mutated_sqlite_stores(tmp_path: Path) -> None:
    clean = build_basemode_db(tmp_path / "clean.sqlite").read_bytes()
    rng = random.Random(f"{SEED}/sqlite")
    for i in range(80):
        data = bytearray(clean)
        if i % 4 == 0:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 30)):
                data[rng.randrange(100, len(data))] = rng.randrange(256)
        path = tmp_path / f"fuzz-{i}.sqlite"
        path.write_bytes(bytes(data))
        try:
            forest = formats.read(path)
        except LoomError as exc:
            assert "\n" not in exc.message and " unreadable " not in exc.message, exc.message
            continue
        doc = Document.new()
        graft(doc, forest)
        store.validate(doc.data)
