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

from loom.errors import DocumentError, LoomError, StorageError, UsageError

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
BRANCH_FORMATS = ("text", "markdown", "transcript")

__all__ = [
    "BRANCH_FORMATS",
    "EXPORT_FORMATS",
    "IMPORT_FORMATS",
    "ImportedForest",
    "ImportedNode",
    "export",
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
) -> ImportedForest:
    """Read a foreign tree file into an ImportedForest (nothing is written anywhere).

    `format` skips detection. `responses` are pyloom model-response backup files;
    backups named `model_responses-*.json` beside the file are found on their own.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DocumentError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DocumentError(f"{path}: is a directory, not a file to import") from None
    except OSError as exc:
        raise StorageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return read_bytes(raw, str(path), format=format, responses=responses, path=path)


def read_bytes(
    raw: bytes,
    name: str,
    *,
    format: str | None = None,
    responses: Iterable[str | os.PathLike[str]] = (),
    path: Path | None = None,
) -> ImportedForest:
    """Like `read`, for bytes already in memory (standard input); `name` is used in messages."""
    if format is not None and format not in IMPORT_FORMATS:
        raise UsageError(f"unknown import format {format!r} (known: {', '.join(IMPORT_FORMATS)})")
    try:
        forest = _parse(raw, name, format, [Path(r) for r in responses], path)
        forest.check()
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
    raw: bytes, name: str, format: str | None, responses: list[Path], path: Path | None
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
            path or Path(name), raw, responses=responses, discover=path is not None, data=data
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


def export(doc: Document, format: str, node: str | None = None) -> bytes:
    """`doc` in another format, as bytes. NODE: the branch end (text, markdown) or subtree root."""
    if format not in _EXPORTERS:
        raise UsageError(f"unknown export format {format!r} (known: {', '.join(EXPORT_FORMATS)})")
    module, function = _EXPORTERS[format]
    writer: Callable[[Document, str | None], bytes] = getattr(_module(module), function)
    return writer(doc, node)
