"""The two bottom lines: the status line and the key hints (where errors show first)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widget import Widget

from loom.document import Document
from loom.journal import undo_entries
from loom.tui.layout import cells


def status_text(
    name: str,
    doc: Document,
    depth: int,
    saving: str,
    generation: str,
    width: int,
    error: str | None = None,
) -> Text:
    """What the status line says: document, node, place, undo depth, save state; the next
    generation's settings on the right; the last error (if any) before them."""
    cursor = doc.cursor_id
    count = f"{len(doc):,} nodes"
    place: list[str] = []
    where = ""
    if cursor is not None:
        siblings = [s for s in doc.sibling_ids(cursor) if not doc.nodes[s].get("archived")]
        where = f"sib {siblings.index(cursor) + 1}/{len(siblings)}" if cursor in siblings else ""
        place = [cursor[:8], f"depth {depth}"]
    else:
        place = ["empty"]
    tail = [f"undo {len(undo_entries(doc))}", saving]
    # Narrow terminals drop the node count, then the sibling position, before the
    # next generation's settings on the right.
    wanted = min(cells(generation), 28)
    for parts in (
        [name, count, *place, where, *tail],
        [name, *place, where, *tail],
        [name, *place, *tail],
    ):
        left = " · ".join(p for p in parts if p)
        if cells(left) + wanted + 2 <= width:
            break
    out = Text(left)
    if error:
        room = width - cells(left) - 4
        if room > 10:
            out.append("  ")
            out.append(error if cells(error) <= room else error[: room - 1] + "…", style="bold red")
    room = width - out.cell_len - 2
    if room >= 8 and generation:
        shown = generation if cells(generation) <= room else generation[: room - 1] + "…"
        out.append(" " * (width - out.cell_len - cells(shown)))
        out.append(shown, style="dim")
    out.truncate(width)
    return out


class StatusLine(Widget):
    DEFAULT_CSS = """
    StatusLine { height: 1; background: $primary 25%; color: $foreground; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.text = Text("")

    def set(self, text: Text) -> None:
        self.text = text
        self.refresh()

    def render(self) -> Text:
        return self.text


class KeyHints(Widget):
    """The keys that matter now; an error replaces them for a few seconds."""

    DEFAULT_CSS = """
    KeyHints { height: 1; background: $panel; color: $foreground 80%; }
    KeyHints.-error { background: $error 30%; color: $foreground; text-style: bold; }
    """
    ERROR_SECONDS = 6.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hints = Text("")
        self.error: str | None = None
        self._timer: Any = None

    def set_hints(self, hints: Text) -> None:
        self.hints = hints
        self.refresh()

    def show_error(self, message: str) -> None:
        self.error = message
        self.add_class("-error")
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(self.ERROR_SECONDS, self.clear_error)
        self.refresh()

    def clear_error(self) -> None:
        self.error = None
        self.remove_class("-error")
        self.refresh()

    def render(self) -> Text:
        if self.error:
            return Text(f"✗ {self.error}", no_wrap=True, overflow="ellipsis")
        out = self.hints.copy()
        out.no_wrap, out.overflow = True, "ellipsis"
        return out
