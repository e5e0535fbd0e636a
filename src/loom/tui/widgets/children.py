"""The children list: the current node's children, numbered as `loom ls` numbers them.

Painted a row at a time, so a node with 10,000 children costs what is on screen. Rows
for branches being generated (streams) follow the real children.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.segment import Segment
from textual.events import Click
from textual.strip import Strip

from loom.cli.render import clip_left, flat, kind_mark, preview
from loom.document import Document, Node
from loom.tui.layout import cells
from loom.tui.messages import NodeChosen
from loom.tui.widgets.base import LineView

NO_CHILDREN = "no children yet: g generates, a adds one"
NO_REPLIES = "no replies yet: i says your next turn, y asks the model for one"


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
    ChildrenList { height: 6; background: $surface; padding: 0 1;
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
        self.parent_id: str | None = None  # whose children these are
        self._streams: list[Stream] = []
        self._streams_of: str | None = None  # the node they are being generated under
        self.selected = 0
        self.empty_hint = NO_CHILDREN

    def show(self, doc: Document, parent: str | None) -> None:
        self.doc = doc
        self.parent_id = parent
        ids = doc.live_child_ids(parent) if parent is not None else []
        if ids != self.ids:  # another node's children: select the one last visited
            last = doc.nodes[parent].get("last_child") if parent is not None else None
            self.selected = ids.index(last) if last in ids else 0
            if self.scroll_y:
                self.scroll_to(y=0, animate=False, immediate=True)
        self.ids = ids
        self._sync_size()
        self.repaint()

    def set_streams(self, streams: list[Stream], parent: str | None = None) -> None:
        """The branches being generated (shown under `parent`: by default, where the
        last ones were)."""
        self._streams = streams
        if parent is not None:
            self._streams_of = parent
        self._sync_size()
        self.repaint()

    @property
    def streams(self) -> list[Stream]:
        """The streams shown: those of the node whose children are shown."""
        return self._streams if self.parent_id == self._streams_of else []

    @property
    def count(self) -> int:
        return len(self.ids) + len(self.streams)

    def _sync_size(self) -> None:
        self.set_virtual_height(max(1, self.count))

    def move(self, step: int) -> None:
        if not self.ids:
            return
        self.selected = max(0, min(len(self.ids) - 1, self.selected + step))
        height = self.scrollable_content_region.height
        if self.selected < self.scroll_y:
            self.scroll_to(y=self.selected, animate=False, immediate=True)
        elif self.selected >= self.scroll_y + height:
            self.scroll_to(y=self.selected - height + 1, animate=False, immediate=True)
        self.repaint()

    def on_focus(self) -> None:
        self.repaint()  # the selected row shows only while the list has the focus

    def on_blur(self) -> None:
        self.repaint()

    def row_key(self, row: int) -> Hashable:
        """What row `row` shows (a node, a stream, the hint when there are none)."""
        doc = self.doc
        if doc is None:
            return None
        if not self.count:
            return ("empty", self.empty_hint) if row == 0 else None
        width = self.scrollable_content_region.width
        digits = len(str(self.count))
        if row < len(self.ids):
            return self._node_look(doc, row, digits, width)
        index = row - len(self.ids)
        if index < len(self.streams):
            return self._stream_look(index, digits, width)
        return None

    def _node_look(self, doc: Document, index: int, digits: int, width: int) -> tuple[Any, ...]:
        node_id = self.ids[index]
        rec = doc.nodes[node_id]
        kids = len(doc.live_child_ids(node_id))
        number = f"{index + 1:>{digits}} "
        unread = "•" if not rec.get("visited") else " "
        kind = kind_mark(Node(doc, node_id)) or " "
        badges = []
        if kids:
            badges.append(f"[{kids}]")
        if "bookmark" in rec:
            badges.append("★")
        badges.extend(f"#{t}" for t in rec.get("tags", ()))
        if rec.get("note"):
            badges.append("✉")
        tail = (" " + " ".join(badges)) if badges else ""
        room = width - cells(number) - 1 - cells(kind) - 1 - cells(tail)
        body = preview(str(rec.get("text", "")), max(8, room))
        selected = index == self.selected and self.has_focus
        return ("node", number, unread, kind, body, tail, selected)

    def _stream_look(self, index: int, digits: int, width: int) -> tuple[Any, ...]:
        stream = self.streams[index]
        number = len(self.ids) + index + 1
        mark = {"streaming": "…", "done": "✓", "failed": "✗", "cancelled": "∅"}.get(
            stream.state, "?"
        )
        head = f"{number:>{digits}} {mark}  "
        note = f"  {stream.note}" if stream.note else ""
        room = max(8, width - cells(head) - cells(note))
        text = stream.text if stream.text or stream.state != "failed" else ""
        if stream.state == "streaming":  # the newest words: the row shows it moving
            shown = clip_left(flat(text[-(room * 4 + 16) :]), room)
        else:
            shown = preview(text, room)
        return ("stream", head, shown, note, stream.state == "failed")

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.base_style
        look = self.row_key(int(self.scroll_y) + y)
        if not isinstance(look, tuple):
            return Strip.blank(width, base)
        if look[0] == "empty":
            hint = Segment(self.empty_hint, base + self._style("children--empty"))
            return Strip([hint]).adjust_cell_length(width, base)
        if look[0] == "node":
            _, number, unread, kind, body, tail, selected = look
            strip = Strip(
                [
                    Segment(number, base + self._style("children--number")),
                    Segment(unread, base + self._style("children--unread")),
                    Segment(kind, base),
                    Segment(" ", base),
                    Segment(body, base),
                    Segment(tail, base + self._style("children--badge")),
                ]
            ).adjust_cell_length(width, base)
            if selected:
                strip = strip.apply_style(self._style("children--selected"))
            return strip
        _, head, shown, note, failed = look
        style = base + self._style("children--failed" if failed else "children--stream")
        return Strip(
            [
                Segment(head, base + self._style("children--number")),
                Segment(shown, style),
                Segment(note, style),
            ]
        ).adjust_cell_length(width, base)

    def on_click(self, event: Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        index = int(self.scroll_y) + offset.y
        if 0 <= index < len(self.ids):
            self.selected = index
            self.post_message(NodeChosen(self.ids[index]))
