"""A conversation as plain text: `System: …`, `User: …`, `Assistant: …` turns (docs/chat.md).

What `loom show` prints for a chat branch when piped, and what `loom import -` reads back
into the same turns: each turn starts with its role label at the start of the text or
after a blank line, and runs to the blank line before the next label.
"""

from __future__ import annotations

import re
from typing import Any

from loom.document import Document
from loom.errors import DocumentError, NotFound
from loom.formats.forest import ImportedForest, ImportedNode
from loom.generation.context import TURN_KEY

FORMAT = "transcript"
_KINDS = {"System": "system", "User": "user", "Assistant": "assistant"}
# A label at the very start, or after a blank line: a turn begins.
_TURN = re.compile(r"(?:\A|\n[ \t]*\n)(System|User|Assistant):[ \t]?")


def sniff(raw: bytes) -> bool:
    """Whether `raw` is UTF-8 text whose first line starts with a role label."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _TURN.match(text.lstrip("\ufeff \t\r\n")) is not None


def parse(data: Any, *, name: str = "") -> ImportedForest:
    """The turns as one branch: a chain of system, user and assistant nodes."""
    text = data.decode("utf-8") if isinstance(data, bytes) else str(data)
    text = text.lstrip("\ufeff \t\r\n").replace("\r\n", "\n")
    starts = list(_TURN.finditer(text))
    if not starts or starts[0].start() != 0:
        raise DocumentError(
            f"{name}: not a transcript (it must begin with User:, Assistant: or System:)"
        )
    forest = ImportedForest(FORMAT, source=name)
    previous: ImportedNode | None = None
    for number, match in enumerate(starts):
        end = starts[number + 1].start() if number + 1 < len(starts) else len(text)
        node = ImportedNode(
            id=str(number + 1),
            text=text[match.end() : end].rstrip("\n"),
            kind=_KINDS[match.group(1)],
            meta={TURN_KEY: True},  # each labelled block is a turn of its own
        )
        forest.nodes[node.id] = node
        if previous is None:
            forest.roots = [node.id]
        else:
            previous.children = [node.id]
        previous = node
    forest.cursor = previous.id if previous is not None else None
    return forest


def export(doc: Document, node: str | None = None) -> bytes:
    """The branch ending at NODE (default: the cursor) as a transcript."""
    from loom.generation.context import context_for

    if node is None and doc.cursor_id is None:
        raise NotFound("the document is empty: there is no branch to export")
    target = doc.resolve(node).id
    return (context_for(doc, target, "chat").transcript() + "\n").encode("utf-8")
