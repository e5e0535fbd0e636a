"""`loom serve --record FILE`: every request kept as a branch of a loom document.

The prompt (or the conversation, one node per message) is written first, under the
document's lock; the generation then writes the choices as its children through the
library's own path (`loom.agenerate` with the document as target), so each choice
records exactly what made it: model, parameters sent, emulation method and cleanup,
timing, token probabilities.
"""

from __future__ import annotations

import time
from pathlib import Path

from loom import ops, store
from loom.generation.context import TURN_KEY, Context

RECORD_KEY = "served"  # node meta: which endpoint and model the request came through


def open_record(path: Path) -> Path:
    """The record file, created empty if missing; an existing one must be a valid document."""
    if path.exists():
        store.load(path)  # a damaged or foreign file is named now, not at the first request
    else:
        from loom.document import Document

        store.create(path, Document.new(title="loom serve record"))
    return path


def record_prompt(path: Path, context: Context, *, endpoint: str, model: str) -> str:
    """Write what the client sent as a new root branch; returns the node to generate from."""
    meta = {RECORD_KEY: {"endpoint": endpoint, "model": model, "at": round(time.time(), 3)}}
    with store.editing(path) as doc:
        if not context.is_chat:
            return ops.add_child(doc, None, context.text or "", meta=meta, move_cursor=False).id
        parent: str | None = None
        turns = [("system", context.system)] if context.system else []
        turns += [(m.role, m.content) for m in context.messages]
        for role, text in turns:
            node = ops.add_child(
                doc, parent, text, kind=role, meta={TURN_KEY: True, **meta}, move_cursor=False
            )
            parent, meta = node.id, {}
        assert parent is not None  # a chat request has at least one message
        return parent
