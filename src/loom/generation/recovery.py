"""Generated texts that could not be written: kept in a recovery file, brought back later.

A provider was paid for these texts; a full disk, a read-only file system or a lock held
past its timeout must not throw them away. `save` writes them, with everything their
nodes would have recorded, to loom's data folder (`recovery/`); `pending` lists the files
waiting for a document; `recover` adds them to it (`restore`: as the children they were
meant to be, or as roots if their parent is gone or changed), as one undoable step and
once only, and deletes the file. The file keeps the generated texts and their records, not the prompt (the user's
own text, which is still in the document), so it stays small on a nearly full disk.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom import files, jsonio, ops, store
from loom.document import Document, Node, now
from loom.errors import BadInput, StorageError
from loom.generation.context import prompt_digest
from loom.journal import transaction
from loom.workspace import data_home

FORMAT = "loom-recovery"
VERSION = 1


def folder() -> Path:
    return data_home() / "recovery"


@dataclass(frozen=True)
class Recovery:
    path: Path
    document: str  # the document's file when the texts were made
    document_id: str
    parent: str | None
    parent_digest: dict[str, Any]  # of the full text the children continue (never the text)
    created: str
    nodes: list[dict[str, Any]]  # {"text", "kind", "meta"} per child

    def summary(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "document": self.document,
            "parent": self.parent,
            "created": self.created,
            "nodes": len(self.nodes),
            "chars": sum(len(n["text"]) for n in self.nodes),
        }


def save(
    document: Path,
    document_id: str,
    parent: str | None,
    parent_text: str,
    nodes: list[dict[str, Any]],
) -> Path:
    """Write a recovery file; raises StorageError if even that fails."""
    where = folder()
    try:
        where.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{where}: cannot create ({files.reason(exc)})") from None
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    # The id comes from the document file: only its safe characters reach the file name.
    label = "".join(ch for ch in document_id[:12] if ch.isascii() and ch.isalnum()) or "doc"
    path = where / f"{stamp}-{label}-{os.getpid()}-{time.monotonic_ns()}.json"
    data = {
        "format": FORMAT,
        "version": VERSION,
        "created": now(),
        "document": str(document),
        "document_id": document_id,
        "parent": parent,
        "parent_digest": prompt_digest(parent_text),
        "nodes": nodes,
    }
    files.write_atomic(path, jsonio.dump_document(data), mode=0o600)
    return path


def read(path: str | os.PathLike[str]) -> Recovery:
    path = Path(path)
    raw = files.read_bytes(path, what="recovery file")
    try:
        data = jsonio.loads(raw)
    except jsonio.DecodeError as exc:
        raise BadInput(f"{path}: not a loom recovery file ({exc.msg})") from None
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or data.get("format") != FORMAT
        or not isinstance(nodes, list)
        or not all(isinstance(n, dict) and isinstance(n.get("text"), str) for n in nodes)
    ):
        raise BadInput(f"{path}: not a loom recovery file")
    if data.get("version") != VERSION:
        raise BadInput(f"{path}: recovery file version {data.get('version')!r} is not {VERSION}")
    parent = data.get("parent")
    return Recovery(
        path=path,
        document=str(data.get("document", "")),
        document_id=str(data.get("document_id", "")),
        parent=parent if isinstance(parent, str) else None,
        parent_digest=dict(data.get("parent_digest") or {}),
        created=str(data.get("created", "")),
        nodes=nodes,
    )


def pending(document: Path | None = None, document_id: str | None = None) -> list[Recovery]:
    """Recovery files waiting, oldest first: those of one document (by its id, or its file),
    or every one. Unreadable files are skipped (`read` one to see why)."""
    try:
        names = sorted(p for p in folder().iterdir() if p.suffix == ".json")
    except OSError:
        return []
    out = []
    for path in names:
        try:
            found = read(path)
        except (BadInput, StorageError):
            continue
        everything = document is None and document_id is None
        same_id = bool(document_id) and found.document_id == document_id
        if everything or same_id or (document is not None and found.document == str(document)):
            out.append(found)
    return out


def recover(
    document: str | os.PathLike[str], chosen: Sequence[str | os.PathLike[str]] = ()
) -> tuple[list[Node], list[Recovery]]:
    """Add recovery files to the document at `document`, as one undoable step: the `chosen`
    ones, else every one waiting for it. Returns the nodes made and the files used.

    Under the document's writer lock, and at most once per file: a file whose texts the
    document already holds (a `recover` killed before deleting it, or one running at the
    same time) adds nothing again. Each file is deleted once the document is saved.
    """
    given = [read(path) for path in chosen]
    made: list[Node] = []
    with store.editing(document) as doc:
        waiting = given or pending(store.real(document), doc.id)
        added = recovered_files(doc)
        for item in waiting:
            if item.path.name not in added:
                made.extend(restore(doc, item))
    for item in waiting:
        discard(item)
    return made, waiting


def recovered_files(doc: Document) -> set[str]:
    """The recovery files whose texts `doc` holds (`meta.recovered_from`)."""
    found = set()
    for rec in doc.nodes.values():
        name = (rec.get("meta") or {}).get("recovered_from")
        if isinstance(name, str):
            found.add(name)
    return found


def restore(doc: Document, recovery: Recovery) -> list[Node]:
    """Add the recovered texts to `doc` (one undoable step); the caller saves, then `discard`s.

    Children go under their parent if it is still there, live, and continues the same
    text. Otherwise each becomes a root: holding the whole text it continued if the
    parent still holds that text (deleted, not purged), else its own text alone, marked
    so (`meta.orphan_of`, `meta.prompt_missing`).
    """
    parent = recovery.parent
    same = parent is not None and parent in doc.nodes and _same_text(doc, parent, recovery)
    alive = same and parent is not None and not doc.is_archived(parent)
    made: list[Node] = []
    with transaction(doc, "recover", f"recover {len(recovery.nodes)} generated text(s)"):
        for item in recovery.nodes:
            meta = dict(item.get("meta") or {})
            meta["recovered_from"] = recovery.path.name
            text = item["text"]
            if not alive and parent is not None:
                meta["orphan_of"] = parent
                if same:
                    text = doc.full_text(parent) + text
                else:
                    meta["prompt_missing"] = True
            made.append(
                ops.add_child(
                    doc,
                    parent if alive else None,
                    text,
                    kind=str(item.get("kind") or "model"),
                    meta=meta,
                    move_cursor=False,
                )
            )
    return made


def _same_text(doc: Document, node_id: str, recovery: Recovery) -> bool:
    return prompt_digest(doc.full_text(node_id)) == recovery.parent_digest


def discard(recovery: Recovery) -> None:
    with contextlib.suppress(FileNotFoundError):
        recovery.path.unlink()
