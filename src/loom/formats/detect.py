"""Which tree format a file is in, from its structure alone (never from its name)."""

from __future__ import annotations

from typing import Any

import orjson

from loom.errors import DocumentError
from loom.formats import IMPORT_FORMATS as KNOWN
from loom.formats import (
    basemode,
    bonsai,
    exoloom,
    loomsidian,
    miniloom,
    nanoloom,
    native,
    openloom,
    pyloom,
    transcript,
)
from loom.formats.readers import loads

SQLITE_MAGIC = b"SQLite format 3\x00"
_JSON_ORDER = (
    ("loom", native.sniff),
    ("miniloom", miniloom.sniff),
    ("exoloom", exoloom.sniff),
    ("nanoloom", nanoloom.sniff),
    ("loomsidian", loomsidian.sniff),
    ("openloom", openloom.sniff),
    ("basemode", basemode.sniff),
    ("bonsai", bonsai.sniff),
    ("pyloom", pyloom.sniff),
)


def _unknown(name: str, what: str) -> DocumentError:
    return DocumentError(
        f"{name}: {what}, not a tree format loom knows ({', '.join(KNOWN)}); pass --format to name one"
    )


class JsonLines(list[Any]):
    """The objects of a JSONL file (a list, marked as lines rather than one JSON array)."""


def detect(raw: bytes, name: str) -> tuple[str, Any]:
    """(format, parsed content) for a file's bytes; parsed is None for an SQLite store.

    JSONL content comes back as a JsonLines list of its line objects.
    """
    if raw.startswith(SQLITE_MAGIC):
        return "basemode", None
    if not raw.strip():
        raise DocumentError(f"{name}: the file is empty")
    try:
        data = loads(raw, name, keep_surrogates=True)
    except DocumentError as error:
        records = json_lines(raw)
        if records is not None:
            return detect_lines(records, name), records
        if raw.lstrip()[:1] in (b"{", b"["):
            raise error from None  # JSON, but broken: say where
        if transcript.sniff(raw):
            return "transcript", raw
        raise _unknown(name, "binary data" if b"\x00" in raw[:4096] else "not JSON") from None
    for fmt, sniff in _JSON_ORDER:
        if sniff(data):
            return fmt, data
    if (
        isinstance(data, dict)
        and data
        and all(isinstance(v, dict) and "completions" in v for v in data.values())
    ):
        raise DocumentError(
            f"{name}: pyloom model responses, not a tree: pass it with --responses when importing the tree"
        )
    if isinstance(data, dict):
        # A JSONL file of one line parses as a single object.
        try:
            return detect_lines([data], name), JsonLines([data])
        except DocumentError:
            pass
    raise _unknown(name, "valid JSON")


def detect_lines(records: list[Any], name: str) -> str:
    if native.sniff_lines(records):
        return "jsonl"
    if pyloom.sniff_lines(records):
        return "pyloom"
    raise _unknown(name, "JSON lines")


def json_lines(raw: bytes) -> JsonLines | None:
    """The objects of a JSONL file, or None if it is not one (any line that is not JSON)."""
    lines = [line for line in raw.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    records = JsonLines()
    for line in lines:
        try:
            records.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            return None
    return records
