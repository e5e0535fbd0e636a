"""The tree pane: the window of the tree around the cursor that `loom tree` draws.

Rows come from `loom.view.tree_window` (the path from the root, siblings along it, the
cursor's subtree a few levels down, single-child runs folded), never from the whole
document, so a 10,000-deep chain or a 100k-node forest costs what the window holds.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.segment import Segment
from textual.events import Click
from textual.geometry import Size
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

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.doc: Document | None = None
        self.rows: list[Row] = []
        self.focus_id: str | None = None
        self._prefixes: list[str] = []  # connector prefix per row

    def show(self, doc: Document, focus: str | None) -> None:
        self.doc = doc
        self.focus_id = focus
        self.rows = tree_window(doc, focus, depth=self.DEPTH, width=self.WIDTH) if focus else []
        self._prefixes = self._connectors(self.rows)
        self.virtual_size = Size(self.scrollable_content_region.width, len(self.rows))
        at = next((i for i, r in enumerate(self.rows) if focus in (r.node_id, *r.run)), 0)
        height = max(1, self.scrollable_content_region.height)
        if not self.scroll_y <= at < self.scroll_y + height:
            self.scroll_to(y=max(0, at - height // 3), animate=False, immediate=True)
        self.refresh()

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
        doc = self.doc
        if doc is None or not 0 <= index < len(self.rows):
            return Strip.blank(width, base)
        row = self.rows[index]
        if row.placeholder:
            # Nodes not drawn: siblings at this level, or ancestors above the window.
            what = (
                f"+{row.hidden_siblings:,} more"
                if row.hidden_siblings
                else f"… {row.levels_above:,} level{'s' if row.levels_above > 1 else ''} above"
            )
            return Strip(
                [
                    Segment(self._prefixes[index], base + self._style("tree--guide")),
                    Segment(what, base + self._style("tree--badge")),
                ]
            ).adjust_cell_length(width, base)
        ids = [row.node_id, *row.run]
        nodes = doc.nodes
        is_focus = self.focus_id in ids
        marker = "●" if is_focus else ("◦" if row.on_path else " ")
        rec = nodes[row.node_id]
        kind = kind_mark(Node(doc, row.node_id))
        unread = "" if all(nodes[i].get("visited") for i in ids) else "•"
        tail = []
        if row.run:
            tail.append(f"×{len(ids)}")
        if row.hidden_children:
            tail.append(f"+{row.hidden_children}")
        if any("bookmark" in nodes[i] for i in ids):
            tail.append("★")
        tail_text = (" " + " ".join(tail)) if tail else ""
        head = [
            Segment(self._prefixes[index], base + self._style("tree--guide")),
            Segment(marker + " ", base + self._style("tree--path")),
            Segment(kind, base),
            Segment(unread, base + self._style("tree--unread")),
        ]
        if kind or unread:
            head.append(Segment(" ", base))
        room = width - sum(cells(s.text) for s in head) - cells(tail_text)
        body = preview(str(rec.get("text", "")).lstrip(), max(4, room))
        strip = Strip(
            [*head, Segment(body, base), Segment(tail_text, base + self._style("tree--badge"))]
        ).adjust_cell_length(width, base)
        if is_focus:
            strip = strip.apply_style(self._style("tree--focus"))
        return strip

    def on_click(self, event: Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        index = int(self.scroll_y) + offset.y
        if 0 <= index < len(self.rows):
            self.post_message(NodeChosen(self.rows[index].node_id))
