"""One branch as plain text (exactly its full text) or as Markdown (chat turns headed by role)."""

from __future__ import annotations

from loom.document import Document
from loom.errors import NotFound

_ROLE_TITLES = {"user": "User", "assistant": "Assistant", "system": "System"}


def _branch(doc: Document, node: str | None) -> list[str]:
    if node is None and doc.cursor_id is None:
        raise NotFound("the document is empty: there is no branch to export")
    return doc.path_ids(node or str(doc.cursor_id))


def export_text(doc: Document, node: str | None = None) -> bytes:
    """The full text of the branch ending at NODE (default: the cursor), nothing added."""
    return doc.full_text(_branch(doc, node)[-1]).encode("utf-8")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def export_markdown(doc: Document, node: str | None = None) -> bytes:
    """The branch as Markdown: the title as a heading, prose as it is, chat turns under role headings.

    Consecutive non-chat nodes are joined exactly as loom joins them; each chat
    turn (user / assistant / system) gets its own heading.
    """
    path = _branch(doc, node)
    blocks: list[str] = []
    if doc.title:
        blocks.append(f"# {_one_line(doc.title)}")
    if doc.description:
        blocks.append("> " + doc.description.strip().replace("\n", "\n> "))
    if doc.system:
        blocks.append(f"## System message\n\n{doc.system.strip()}")
    prose: list[str] = []
    for node_id in path:
        rec = doc.nodes[node_id]
        kind = rec.get("kind", "human")
        text = str(rec.get("text", ""))
        if kind in _ROLE_TITLES:
            if prose:
                blocks.append("".join(prose).strip("\n"))
                prose = []
            blocks.append(f"### {_ROLE_TITLES[kind]}\n\n{text.strip()}")
        else:
            prose.append(text)
    if prose:
        blocks.append("".join(prose).strip("\n"))
    return ("\n\n".join(b for b in blocks if b) + "\n").encode("utf-8")
