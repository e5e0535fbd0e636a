"""loom: weave trees of text with language models.

    import loom
    doc = loom.open("story.loom.json")           # read a document
    print(doc.cursor.full_text)
    with loom.edit("story.loom.json") as doc:     # lock, load, save on success
        node = loom.ops.add_child(doc, doc.cursor_id, " and then")

    result = loom.generate("story.loom.json", loom.GenerationRequest(n=3))
    result = await loom.agenerate("story.loom.json", request, events=print)  # in a loop

The core (documents, operations, undo, storage) loads with `import loom`; generation,
formats, ingest and model configuration are imported on first use, so `import loom`
stays fast.
"""

from __future__ import annotations

# Not `typing.TYPE_CHECKING`: importing `typing` costs more than the rest of this module,
# and a Ctrl-C before the command's own handling is ready would print a traceback.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    from contextlib import AbstractContextManager
    from typing import Any

    from loom import chat, config, formats, ingest, ops, search, store
    from loom.config import ModelConfig, all_models, get_model
    from loom.document import KINDS, SCHEMA_VERSION, Document, Node
    from loom.errors import (
        AmbiguousId,
        BackendError,
        ConfigError,
        DocumentError,
        Interrupted,
        InvalidOperation,
        LockTimeout,
        LoomError,
        NotFound,
        StorageError,
        UsageError,
    )
    from loom.formats import export, import_file
    from loom.generation import events
    from loom.generation.backends import BackendPool
    from loom.generation.context import Context, Message
    from loom.generation.core import Generation, agenerate, generate
    from loom.generation.request import GenerationRequest
    from loom.journal import redo, transaction, undo

__version__ = "0.1.0"

# Everything is imported on first use, so that `import loom` (which the `loom` command does
# before anything else) costs nothing: name -> (module, attribute; None for the module).
_ERRORS = (
    "AmbiguousId", "BackendError", "ConfigError", "DocumentError", "Interrupted",
    "InvalidOperation", "LockTimeout", "LoomError", "NotFound", "StorageError", "UsageError",
)  # fmt: skip
_LAZY: dict[str, tuple[str, str | None]] = {
    "ops": ("loom.ops", None),
    "store": ("loom.store", None),
    "KINDS": ("loom.document", "KINDS"),
    "SCHEMA_VERSION": ("loom.document", "SCHEMA_VERSION"),
    "Document": ("loom.document", "Document"),
    "Node": ("loom.document", "Node"),
    **{name: ("loom.errors", name) for name in _ERRORS},
    "transaction": ("loom.journal", "transaction"),
    "undo": ("loom.journal", "undo"),
    "redo": ("loom.journal", "redo"),
    "search": ("loom.search", None),
    "chat": ("loom.chat", None),
    "formats": ("loom.formats", None),
    "import_file": ("loom.formats", "import_file"),
    "export": ("loom.formats", "export"),
    "ingest": ("loom.ingest", None),
    "config": ("loom.config", None),
    "ModelConfig": ("loom.config", "ModelConfig"),
    "get_model": ("loom.config", "get_model"),
    "all_models": ("loom.config", "all_models"),
    "agenerate": ("loom.generation.core", "agenerate"),
    "generate": ("loom.generation.core", "generate"),
    "Generation": ("loom.generation.core", "Generation"),
    "GenerationRequest": ("loom.generation.request", "GenerationRequest"),
    "Context": ("loom.generation.context", "Context"),
    "Message": ("loom.generation.context", "Message"),
    "BackendPool": ("loom.generation.backends", "BackendPool"),
    "events": ("loom.generation.events", None),
}

__all__ = [
    "KINDS",
    "SCHEMA_VERSION",
    "AmbiguousId",
    "BackendError",
    "BackendPool",
    "ConfigError",
    "Context",
    "Document",
    "DocumentError",
    "Generation",
    "GenerationRequest",
    "Interrupted",
    "InvalidOperation",
    "LockTimeout",
    "LoomError",
    "Message",
    "ModelConfig",
    "Node",
    "NotFound",
    "StorageError",
    "UsageError",
    "__version__",
    "agenerate",
    "all_models",
    "chat",
    "config",
    "edit",
    "events",
    "export",
    "formats",
    "generate",
    "get_model",
    "import_file",
    "ingest",
    "new",
    "open",
    "ops",
    "redo",
    "save",
    "search",
    "store",
    "transaction",
    "undo",
]


def open(path: str | os.PathLike[str]) -> Document:
    """Read a document (no lock held; use `edit` to change it)."""
    from loom import store

    return store.load(path)


def edit(path: str | os.PathLike[str]) -> AbstractContextManager[Document]:
    """Lock the file, load it, and save it on leaving the block if anything changed."""
    from loom import store

    return store.editing(path)


def new(path: str | os.PathLike[str], *, title: str = "", overwrite: bool = False) -> Document:
    """Create an empty document file and return it, ready to change and `save`."""
    from loom import store
    from loom.document import Document

    doc = Document.new(title=title)
    store.create(path, doc, overwrite=overwrite)
    return doc


def save(doc: Document, path: str | os.PathLike[str]) -> None:
    """Write `doc` to `path` atomically, under the file's lock.

    This replaces the file with `doc` as it is in memory. To change a file that other
    processes may change too, use `edit`, which re-reads under the lock.
    """
    from loom import store

    with store.locked(path):
        store.save(doc, path)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'loom' has no attribute {name!r}")
    import importlib

    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
