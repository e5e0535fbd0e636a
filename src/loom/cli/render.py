"""Text rendering for people at a terminal. JSON and raw output never pass through here."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable
from typing import TYPE_CHECKING

from loom import logprobs
from loom.cli.common import style
from loom.document import Document, Node

if TYPE_CHECKING:
    from loom.view import Row

KIND_MARK = {"model": "", "human": "✎", "import": "⇲", "system": "S", "user": "U", "assistant": "A"}


def width() -> int:
    return shutil.get_terminal_size((100, 24)).columns


def preview(text: str, limit: int) -> str:
    flat = text.replace("\r", "").replace("\n", "⏎").replace("\t", " ")
    if len(flat) <= limit:
        return flat
    return flat[: max(0, limit - 1)] + "…"


def badges(node: Node) -> str:
    parts: list[str] = []
    if node.bookmarked:
        title = node.bookmark_title
        parts.append(style("★" + (f" {title}" if title else ""), fg="yellow"))
    parts.extend(style(f"#{t}", fg="magenta") for t in node.tags)
    if node.note:
        parts.append(style("✉", fg="blue"))
    if node.record.get("meta", {}).get("incomplete"):
        parts.append(style("⋯incomplete", fg="red"))
    return " ".join(parts)


def node_line(
    node: Node,
    short: str,
    *,
    current: bool = False,
    number: int | None = None,
    room: int | None = None,
) -> str:
    """One line describing a node: marker, number, id, kind, unread dot, preview, badges."""
    room = room or width()
    head = ("● " if current else "  ") + (f"{number:>2}. " if number is not None else "")
    head += style(short, fg="cyan")
    mark = KIND_MARK.get(node.kind, "?")
    unread = "" if node.visited else style("•", fg="green")
    tail = badges(node)
    kids = len(node.doc.live_child_ids(node.id))
    count = style(f" [{kids}]", dim=True) if kids else ""
    fixed = (
        len(short)
        + len(head)
        - len(style(short, fg="cyan"))
        + 4
        + len(mark)
        + len(count)
        + len(tail)
    )
    body = preview(node.text, max(10, room - fixed - 6))
    text = f"{head} {mark}{unread} {body}{count}"
    return f"{text} {tail}" if tail else text


def branch_text(doc: Document, node_id: str) -> str:
    """The full text with node boundaries marked by alternating colours and the node in bold."""
    path = doc.path_ids(node_id)
    pieces: list[str] = []
    for i, pid in enumerate(path):
        segment = doc.nodes[pid].get("text", "")
        if pid == node_id:
            pieces.append(style(segment, bold=True, underline=False))
        else:
            pieces.append(style(segment, fg="bright_black" if i % 2 else None))
    return "".join(pieces)


def _probability_colour(logprob: float) -> str:
    p = math.exp(logprob)
    if p >= 0.8:
        return "green"
    if p >= 0.5:
        return "bright_green"
    if p >= 0.2:
        return "yellow"
    if p >= 0.05:
        return "bright_red"
    return "red"


def probabilities(doc: Document, node_id: str) -> str:
    """The branch text with every token of known probability coloured by it."""
    pieces: list[str] = []
    for pid in doc.path_ids(node_id):
        text = doc.nodes[pid].get("text", "")
        probs = logprobs.of(doc, pid)
        if probs is None or not logprobs.aligned(probs, text):
            pieces.append(text)
            continue
        for tok, lp in zip(probs["tokens"], probs["lp"], strict=False):
            pieces.append(style(tok, fg=_probability_colour(lp)))
    return "".join(pieces)


def tree_lines(doc: Document, rows: Iterable[Row], focus: str | None) -> list[str]:
    rows = list(rows)
    ids = [i for r in rows for i in [r.node_id, *r.run]]
    shorts = doc.short_ids(ids)
    room = width()
    lines: list[str] = []
    lasts: list[bool] = []
    for row in rows:
        del lasts[row.indent :]
        prefix = "".join("   " if last else "│  " for last in lasts[1:]) if row.indent else ""
        if row.indent:
            prefix += "└─ " if row.is_last else "├─ "
        lasts.append(row.is_last)
        ids_here = [row.node_id, *row.run]
        is_focus = focus in ids_here
        node = Node(doc, row.node_id)
        text = "".join(doc.nodes[i].get("text", "") for i in ids_here)
        marker = style("●", fg="green", bold=True) if is_focus else ("◦" if row.on_path else " ")
        short = style(shorts[row.last_id] if row.run else shorts[row.node_id], fg="cyan")
        chain = style(f" ×{len(ids_here)}", dim=True) if row.run else ""
        hidden = style(f" +{row.hidden_children}", dim=True) if row.hidden_children else ""
        unread = (
            "" if all(doc.nodes[i].get("visited") for i in ids_here) else style("•", fg="green")
        )
        tail = " ".join(filter(None, (badges(Node(doc, i)) for i in ids_here)))
        used = len(prefix) + 2 + len(shorts[row.last_id]) + 8
        body = preview(text, max(12, room - used - len(tail)))
        if is_focus:
            body = style(body, bold=True)
        kind = KIND_MARK.get(node.kind, "?")
        line = f"{prefix}{marker} {short} {kind}{unread} {body}{chain}{hidden}"
        lines.append(f"{line} {tail}" if tail else line)
    return lines
