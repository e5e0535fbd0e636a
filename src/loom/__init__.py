"""loom: weave trees of text with language models.

    import loom
    doc = loom.open("story.loom.json")           # read a document
    print(doc.cursor.full_text)
    with loom.edit("story.loom.json") as doc:     # lock, load, save on success
        node = loom.ops.add_child(doc, doc.cursor_id, " and then")

Everything else (generation, formats) is imported on first use, so `import loom`
stays fast.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from typing import Any

from loom import ops, store
from loom.document import KINDS, SCHEMA_VERSION, Document, Node
from loom.errors import (
    AmbiguousId,
    BackendError,
    DocumentError,
    Interrupted,
    InvalidOperation,
    LockTimeout,
    LoomError,
    NotFound,
    StorageError,
)
from loom.journal import redo, transaction, undo

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "SCHEMA_VERSION",
    "AmbiguousId",
    "BackendError",
    "Document",
    "DocumentError",
    "Interrupted",
    "InvalidOperation",
    "LockTimeout",
    "LoomError",
    "Node",
    "NotFound",
    "StorageError",
    "__version__",
    "edit",
    "new",
    "open",
    "ops",
    "redo",
    "search",
    "store",
    "transaction",
    "undo",
]


def open(path: str | os.PathLike[str]) -> Document:
    """Read a document (no lock held; use `edit` to change it)."""
    return store.load(path)


def edit(path: str | os.PathLike[str]) -> AbstractContextManager[Document]:
    """Lock the file, load it, and save it on leaving the block if anything changed."""
    return store.editing(path)


def new(path: str | os.PathLike[str], *, title: str = "", overwrite: bool = False) -> Document:
    """Create an empty document file and return it."""
    doc = Document.new(title=title)
    store.create(path, doc, overwrite=overwrite)
    return doc


def __getattr__(name: str) -> Any:
    # Submodules that navigation does not need are imported on first use.
    if name == "search":
        import loom.search

        return loom.search
    raise AttributeError(f"module 'loom' has no attribute {name!r}")
