"""The children list: the current node's children, numbered as `loom ls` numbers them.

Painted a row at a time, so a node with 10,000 children costs what is on screen. Rows
for branches being generated (streams) follow the real children.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.events import Click
from textual.geometry import Size
from textual.strip import Strip

from loom.cli.render import kind_mark, preview
from loom.document import Document, Node
from loom.tui.layout import cells
from loom.tui.messages import NodeChosen
from loom.tui.widgets.base import LineView


@dataclass
class Stream:
    """A branch being generated: its text so far and how it stands."""

    text: str = ""
    state: str = "streaming"  # streaming | done | failed | cancelled
    note: str = ""  # the error, or what finished it


class ChildrenList(LineView, can_focus=True):
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "children--number",
        "children--unread",
        "children--badge",
        "children--selected",
        "children--empty",
        "children--stream",
        "children--failed",
    }
    DEFAULT_CSS = """
    ChildrenList { height: auto; max-height: 7; background: $surface; padding: 0 1;
                   border-top: solid $primary 40%; }
    ChildrenList:focus { border-top: solid $primary; }
    ChildrenList > .children--number { color: $primary; text-style: bold; }
    ChildrenList > .children--unread { color: $success; text-style: bold; }
    ChildrenList > .children--badge { color: $foreground 60%; }
    ChildrenList > .children--selected { background: $primary 30%; }
    ChildrenList > .children--empty { color: $foreground 50%; text-style: italic; }
    ChildrenList > .children--stream { color: $foreground 80%; text-style: italic; }
    ChildrenList > .children--failed { color: $error; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.doc: Document | None = None
        self.ids: list[str] = []
        self.streams: list[Stream] = []
        self.selected = 0

    def show(self, doc: Document, parent: str | None) -> None:
        self.doc = doc
        ids = doc.live_child_ids(parent) if parent is not None else []
        if ids != self.ids:  # another node's children: select the one last visited
            last = doc.nodes[parent].get("last_child") if parent is not None else None
            self.selected = ids.index(last) if last in ids else 0
        self.ids = ids
        self._sync_size()
        self.refresh()

    def set_streams(self, streams: list[Stream]) -> None:
        self.streams = streams
        self._sync_size()
        self.refresh()

    @property
    def count(self) -> int:
        return len(self.ids) + len(self.streams)

    def _sync_size(self) -> None:
        self.virtual_size = Size(self.scrollable_content_region.width, max(1, self.count))

    def move(self, step: int) -> None:
        if not self.ids:
            return
        self.selected = max(0, min(len(self.ids) - 1, self.selected + step))
        height = self.scrollable_content_region.height
        if self.selected < self.scroll_y:
            self.scroll_to(y=self.selected, animate=False, immediate=True)
        elif self.selected >= self.scroll_y + height:
            self.scroll_to(y=self.selected - height + 1, animate=False, immediate=True)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.base_style
        index = int(self.scroll_y) + y
        doc = self.doc
        if doc is None:
            return Strip.blank(width, base)
        if not self.count:
            if y == 0:
                hint = "no children yet: g generates, a adds one"
                return Strip(
                    [Segment(hint, base + self._style("children--empty"))]
                ).adjust_cell_length(width, base)
            return Strip.blank(width, base)
        digits = len(str(self.count))
        if index < len(self.ids):
            strip = self._node_row(doc, index, digits, width, base)
            if index == self.selected and self.has_focus:
                strip = strip.apply_style(self._style("children--selected"))
            return strip
        index -= len(self.ids)
        if index < len(self.streams):
            return self._stream_row(index, digits, width, base)
        return Strip.blank(width, base)

    def _node_row(self, doc: Document, index: int, digits: int, width: int, base: Style) -> Strip:
        node_id = self.ids[index]
        rec = doc.nodes[node_id]
        kids = len(doc.live_child_ids(node_id))
        head = [
            Segment(f"{index + 1:>{digits}} ", base + self._style("children--number")),
            Segment("•" if not rec.get("visited") else " ", base + self._style("children--unread")),
            Segment(kind_mark(Node(doc, node_id)) or " ", base),
            Segment(" ", base),
        ]
        badges = []
        if kids:
            badges.append(f"[{kids}]")
        if "bookmark" in rec:
            badges.append("★")
        badges.extend(f"#{t}" for t in rec.get("tags", ()))
        if rec.get("note"):
            badges.append("✉")
        tail = (" " + " ".join(badges)) if badges else ""
        room = width - sum(cells(s.text) for s in head) - cells(tail)
        body = preview(str(rec.get("text", "")), max(8, room))
        return Strip(
            [*head, Segment(body, base), Segment(tail, base + self._style("children--badge"))]
        ).adjust_cell_length(width, base)

    def _stream_row(self, index: int, digits: int, width: int, base: Style) -> Strip:
        stream = self.streams[index]
        number = len(self.ids) + index + 1
        mark = {"streaming": "…", "done": "✓", "failed": "✗", "cancelled": "∅"}.get(
            stream.state, "?"
        )
        style = base + self._style(
            "children--failed" if stream.state == "failed" else "children--stream"
        )
        head = Segment(f"{number:>{digits}} {mark}  ", base + self._style("children--number"))
        note = f"  {stream.note}" if stream.note else ""
        room = width - cells(head.text) - cells(note)
        text = stream.text if stream.text or stream.state != "failed" else ""
        return Strip(
            [head, Segment(preview(text, max(8, room)), style), Segment(note, style)]
        ).adjust_cell_length(width, base)

    def on_click(self, event: Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        index = int(self.scroll_y) + offset.y
        if 0 <= index < len(self.ids):
            self.selected = index
            self.post_message(NodeChosen(self.ids[index]))
