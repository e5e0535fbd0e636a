"""Other loom tools' tree formats: bring their files into a document, and write documents out.

    from loom import formats, store
    doc = store.load("story.loom.json")
    forest = formats.read("tree.openloom.json")         # detect, parse, validate
    roots = formats.graft(doc, forest)                   # one undoable step
    html = formats.export(doc, "html")                   # bytes

Importers: openloom, pyloom, loomsidian, basemode (JSON or its SQLite store),
miniloom, exoloom, bonsai, nanoloom, and loom's own document and JSONL forms.
Exporters: openloom, pyloom, loomsidian (one note), basemode (JSON), jsonl, loom,
text and markdown (one branch), html (the whole tree, self-contained).
Format modules are imported on first use.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loom.errors import DocumentError, LoomError, UsageError

if TYPE_CHECKING:
    from loom.document import Document
    from loom.formats.forest import ImportedForest, ImportedNode, graft

# Every format `loom import` reads (detection lists them in this order in its errors).
IMPORT_FORMATS = (
    "loom",
    "jsonl",
    "openloom",
    "pyloom",
    "loomsidian",
    "basemode",
    "miniloom",
    "exoloom",
    "bonsai",
    "nanoloom",
    "transcript",
)
# format -> (module, function); the branch formats export one branch, the others a tree.
_EXPORTERS: dict[str, tuple[str, str]] = {
    "openloom": ("openloom", "export"),
    "pyloom": ("pyloom", "export"),
    "loomsidian": ("loomsidian", "export"),
    "basemode": ("basemode", "export"),
    "jsonl": ("native", "export_lines"),
    "loom": ("native", "export_document"),
    "html": ("html", "export"),
    "text": ("text", "export_text"),
    "markdown": ("text", "export_markdown"),
    "transcript": ("transcript", "export"),
}
EXPORT_FORMATS = tuple(_EXPORTERS)
# The most `loom import` reads from one file (or standard input) unless told otherwise.
MAX_BYTES = 100 * 1024 * 1024
BRANCH_FORMATS = ("text", "markdown", "transcript")

__all__ = [
    "BRANCH_FORMATS",
    "EXPORT_FORMATS",
    "IMPORT_FORMATS",
    "MAX_BYTES",
    "ImportedForest",
    "ImportedNode",
    "export",
    "export_notes",
    "graft",
    "import_file",
    "read",
    "read_bytes",
]


def _module(name: str) -> Any:
    return importlib.import_module(f"loom.formats.{name}")


def __getattr__(name: str) -> Any:
    # The forest and graft load with the first use: `import loom.formats` stays cheap.
    if name in ("ImportedForest", "ImportedNode", "graft"):
        return getattr(_module("base"), name)
    raise AttributeError(f"module 'loom.formats' has no attribute {name!r}")


def read(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    responses: Iterable[str | os.PathLike[str]] = (),
    max_bytes: int = MAX_BYTES,
) -> ImportedForest:
    """Read a foreign tree file into an ImportedForest (nothing is written anywhere).

    `format` skips detection. `responses` are pyloom model-response backup files;
    backups named `model_responses-*.json` beside the file are found on their own.
    The file (and each response file) must be a regular file of at most `max_bytes`.
    """
    path = Path(path)
    raw = read_file(path, max_bytes)
    return read_bytes(
        raw, str(path), format=format, responses=responses, path=path, max_bytes=max_bytes
    )


def read_file(path: Path, max_bytes: int = MAX_BYTES) -> bytes:
    """A file to import: a regular file (never a FIFO or a device) of at most `max_bytes`."""
    from loom import files

    return files.read_bytes(
        path, limit=max_bytes, what="file to import", note=" (raise it with --max-bytes)"
    )


def read_bytes(
    raw: bytes,
    name: str,
    *,
    format: str | None = None,
    responses: Iterable[str | os.PathLike[str]] = (),
    path: Path | None = None,
    max_bytes: int = MAX_BYTES,
) -> ImportedForest:
    """Like `read`, for bytes already in memory (standard input); `name` is used in messages.

    The import may hold at most `forest.GROWTH_LIMIT` times the bytes it read (a file
    whose nodes all point at one shared blob is refused, not copied onto each node).
    """
    if format is not None and format not in IMPORT_FORMATS:
        raise UsageError(f"unknown import format {format!r} (known: {', '.join(IMPORT_FORMATS)})")
    try:
        forest = _parse(raw, name, format, [Path(r) for r in responses], path, max_bytes)
        forest.input_bytes += len(raw)
        forest.check()
        forest.check_growth()
        forest.drop_secrets()  # API keys and tokens in foreign settings are never imported
    except DocumentError as exc:
        if exc.message.startswith(f"{name}:"):
            raise
        # Say which file: the importers' messages name the format and the node.
        raise DocumentError(f"{name}: {exc.message}", **exc.details) from None
    except LoomError:
        raise
    except (
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        IndexError,
        OverflowError,
        RecursionError,
    ) as exc:
        # Importers check every value they read; this net keeps a missed case a one-line error.
        what = format or "tree"
        raise DocumentError(
            f"{name}: unreadable {what} file ({type(exc).__name__}: {exc})"
        ) from None
    forest.source = forest.source or name
    return forest


def _parse(
    raw: bytes,
    name: str,
    format: str | None,
    responses: list[Path],
    path: Path | None,
    max_bytes: int,
) -> ImportedForest:
    from loom.formats import detect
    from loom.formats.readers import has_surrogate_escapes, loads, scrub_surrogates

    if format is None:
        format, data = detect.detect(raw, name)
    elif raw.startswith(detect.SQLITE_MAGIC) or format in ("pyloom", "jsonl", "loom"):
        data = None  # parsed below, by the format's own reader
    elif format == "transcript":
        data = raw  # plain text, not JSON
    else:
        data = loads(raw, name, keep_surrogates=True)
    if responses and format != "pyloom":
        raise UsageError(f"{name} is a {format} file: response backups only go with pyloom trees")
    if format not in ("miniloom", "transcript") and data is not None and has_surrogate_escapes(raw):
        # Unpaired surrogates (JavaScript can write them) cannot be saved; MiniLoom alone
        # needs them, to rejoin characters its patches split.
        data = scrub_surrogates(data)
    if format == "basemode" and raw.startswith(detect.SQLITE_MAGIC):
        if path is None:
            raise DocumentError(
                f"{name}: an SQLite store must be imported from a file, not standard input"
            )
        from loom.formats import basemode

        return basemode.read_sqlite(path)
    if format == "loom":
        from loom.formats import native

        return native.parse_document(raw, name=name)
    if format == "jsonl":
        from loom.formats import native

        records = data if isinstance(data, detect.JsonLines) else _lines(raw, name)
        return native.parse_lines(records, name=name)
    if format == "pyloom":
        from loom.formats import pyloom

        lines = (
            data
            if isinstance(data, detect.JsonLines)
            else detect.json_lines(raw)
            if data is None
            else None
        )
        if lines is not None and pyloom.sniff_lines(lines):
            return pyloom.parse_lines(lines, name=name)
        return pyloom.read(
            path or Path(name),
            raw,
            responses=responses,
            discover=path is not None,
            data=data,
            max_bytes=max_bytes,
        )
    parse: Callable[..., ImportedForest] = _module(format).parse
    return parse(data, name=name)


def _lines(raw: bytes, name: str) -> list[Any]:
    from loom.formats import detect

    records: list[Any] | None = detect.json_lines(raw)
    if records is None:
        from loom.formats.readers import loads

        single = loads(raw, name)
        if isinstance(single, dict):
            return [single]
        raise DocumentError(f"{name}: not JSON lines (one JSON object per line)")
    return records


def import_file(
    doc: Document,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    parent: str | None = None,
    responses: Iterable[str | os.PathLike[str]] = (),
) -> tuple[ImportedForest, list[str]]:
    """Read a foreign file and graft it into `doc`; returns the forest and the new root ids."""
    from loom.formats.forest import graft

    forest = read(path, format=format, responses=responses)
    return forest, graft(doc, forest, parent)


def export_notes(doc: Document, format: str, node: str | None = None) -> list[str]:
    """What exporting `doc` as `format` leaves out, or keeps only where loom reads it back.

    For the formats with no place for some of loom's data (OpenLoom, Loomsidian), one
    note per kind of loss with its count; [] for the others.
    """
    if format not in _EXPORTERS:
        raise UsageError(f"unknown export format {format!r} (known: {', '.join(EXPORT_FORMATS)})")
    losses: Callable[[Document, str | None], list[str]] | None = getattr(
        _module(_EXPORTERS[format][0]), "losses", None
    )
    return losses(doc, node) if losses is not None else []


def export(doc: Document, format: str, node: str | None = None) -> bytes:
    """`doc` in another format, as bytes. NODE: the branch end (text, markdown) or subtree root."""
    if format not in _EXPORTERS:
        raise UsageError(f"unknown export format {format!r} (known: {', '.join(EXPORT_FORMATS)})")
    module, function = _EXPORTERS[format]
    writer: Callable[[Document, str | None], bytes] = getattr(_module(module), function)
    return writer(doc, node)
