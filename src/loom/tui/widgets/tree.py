"""The tree pane: the window of the tree around the cursor that `loom tree` draws.

Rows come from `loom.view.tree_window` (the path from the root, siblings along it, the
cursor's subtree a few levels down, single-child runs folded), never from the whole
document, so a 10,000-deep chain or a 100k-node forest costs what the window holds.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, ClassVar

from rich.segment import Segment
from textual.events import Click, Resize
from textual.strip import Strip

from loom.cli.render import kind_mark, preview
from loom.document import Document, Node
from loom.tui.layout import cells
from loom.tui.messages import NodeChosen
from loom.tui.widgets.base import LineView
from loom.view import Row, tree_window


class TreePane(LineView, can_focus=True):
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "tree--guide",
        "tree--focus",
        "tree--path",
        "tree--unread",
        "tree--badge",
    }
    DEFAULT_CSS = """
    TreePane { width: 32; background: $surface; border-left: solid $primary 40%; }
    TreePane:focus { border-left: solid $primary; }
    TreePane > .tree--guide { color: $foreground 40%; }
    TreePane > .tree--focus { background: $primary 30%; text-style: bold; }
    TreePane > .tree--path { color: $foreground; }
    TreePane > .tree--unread { color: $success; text-style: bold; }
    TreePane > .tree--badge { color: $foreground 60%; }
    """
    DEPTH = 2  # levels shown below the cursor
    WIDTH = 6  # children shown per node
    ABOVE = 4  # ancestors shown above it (the window shrinks to the pane's height)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.doc: Document | None = None
        self.rows: list[Row] = []
        self.focus_id: str | None = None
        self.focus_row = 0
        self._prefixes: list[str] = []  # connector prefix per row
        self._looks: list[tuple[str, ...]] = []  # per row: what it shows, bar the styles

    def show(self, doc: Document, focus: str | None, path: list[str] | None = None) -> None:
        """The window around `focus`; `path`, its ids from the root when known (then a
        10,000-deep chain costs what the window shows)."""
        self.doc = doc
        self.focus_id = focus
        height = max(1, self.scrollable_content_region.height)
        self.rows = (
            tree_window(
                doc,
                focus,
                depth=self.DEPTH,
                width=self.WIDTH,
                above=self.ABOVE,
                height=height,
                path=path,
            )
            if focus
            else []
        )
        self.focus_row = 0
        self._prefixes = self._connectors(self.rows)
        self._looks = [self._look(i, row) for i, row in enumerate(self.rows)]
        self.set_virtual_height(len(self.rows))
        at = self.focus_row
        height = max(1, self.scrollable_content_region.height)
        if not self.scroll_y <= at < self.scroll_y + height:
            self.scroll_to(y=max(0, at - height // 3), animate=False, immediate=True)
        self.repaint()

    def on_resize(self, event: Resize) -> None:
        super().on_resize(event)
        if self.doc is not None and self.display:
            self.show(self.doc, self.focus_id)

    def _look(self, index: int, row: Row) -> tuple[str, ...]:
        """The row's marker, kind, unread mark, text and badges: looked up once per show
        (a folded run may hold thousands of nodes), not once per paint."""
        assert self.doc is not None
        prefix = self._prefixes[index]
        if row.levels_above:
            levels = "level" if row.levels_above == 1 else "levels"
            return ("", "", "", "", f"… {row.levels_above:,} {levels} above", "")
        if row.hidden_siblings:
            return (prefix, "", "", "", f"+{row.hidden_siblings:,} more", "")
        nodes = self.doc.nodes
        ids = [row.node_id, *row.run]
        is_focus = self.focus_id == row.node_id or self.focus_id in row.run
        if is_focus:
            self.focus_row = index
        marker = "●" if is_focus else ("◦" if row.on_path else " ")
        rec = nodes[row.node_id]
        kind = kind_mark(Node(self.doc, row.node_id))
        unread = "" if all(nodes[i].get("visited") for i in ids) else "•"
        tail = []
        if row.run:
            tail.append(f"×{len(ids):,}")
        if row.hidden_children:
            tail.append(f"+{row.hidden_children:,}")
        if any("bookmark" in nodes[i] for i in ids):
            tail.append("★")
        tail_text = (" " + " ".join(tail)) if tail else ""
        room = (
            self.scrollable_content_region.width
            - cells(self._prefixes[index])
            - 2
            - cells(kind)
            - cells(unread)
            - (1 if kind or unread else 0)
            - cells(tail_text)
        )
        body = preview(str(rec.get("text", "")).lstrip(), max(4, room))
        return (self._prefixes[index], marker, kind, unread, body, tail_text)

    def row_key(self, row: int) -> Hashable:
        return self._looks[row] if 0 <= row < len(self._looks) else None

    def _connectors(self, rows: list[Row]) -> list[str]:
        """Tree guides, indented relative to the window: deep paths do not run off the pane."""
        if not rows:
            return []
        room = max(4, (self.scrollable_content_region.width or 30) // 2)
        deepest = max(r.indent for r in rows)
        shift = max(0, deepest - room // 2)
        out: list[str] = []
        lasts: list[bool] = []
        for row in rows:
            del lasts[row.indent :]
            lasts.extend([True] * (row.indent - len(lasts)))  # levels whose rows were elided
            level = row.indent - shift
            if row.indent == 0:
                prefix = ""
            elif level <= 0:
                prefix = "…"
            else:
                guides = lasts[1 + shift :]
                prefix = "".join("  " if last else "│ " for last in guides)
                prefix += "└ " if row.is_last else "├ "
            lasts.append(row.is_last)
            out.append(prefix)
        return out

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.base_style
        index = int(self.scroll_y) + y
        if not 0 <= index < len(self._looks):
            return Strip.blank(width, base)
        prefix, marker, kind, unread, body, tail = self._looks[index]
        if not marker:  # a placeholder: ancestors or siblings not drawn
            return Strip(
                [
                    Segment(prefix, base + self._style("tree--guide")),
                    Segment(body, base + self._style("tree--badge")),
                ]
            ).adjust_cell_length(width, base)
        head = [
            Segment(prefix, base + self._style("tree--guide")),
            Segment(marker + " ", base + self._style("tree--path")),
            Segment(kind, base),
            Segment(unread, base + self._style("tree--unread")),
        ]
        if kind or unread:
            head.append(Segment(" ", base))
        strip = Strip(
            [*head, Segment(body, base), Segment(tail, base + self._style("tree--badge"))]
        ).adjust_cell_length(width, base)
        if marker == "●":
            strip = strip.apply_style(self._style("tree--focus"))
        return strip

    def on_click(self, event: Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        index = int(self.scroll_y) + offset.y
        if 0 <= index < len(self.rows):
            self.post_message(NodeChosen(self.rows[index].node_id))
