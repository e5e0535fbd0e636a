"""What the TUI's Line API widgets share: styles looked up once per style change, and
repainting only the rows whose content changed.

Textual repaints a whole widget on `refresh()`, and a whole screen layout whenever a
widget's virtual size changes. A keypress usually changes a few rows (the highlight
moves, one child appears), so each pane describes every visible row by a key (what it
shows) and `repaint` refreshes only the rows whose key changed since they were painted.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.events import Resize
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget


class _StyleCache:
    """`rich_style` kept until the styles change (a theme switch, focus, NO_COLOR):
    Textual computes it by walking the widget's ancestors on every call, and a pane asks
    for it on every row it paints."""

    _base: Style | None = None
    _components: dict[str, Style] | None = None

    def notify_style_update(self) -> None:
        super().notify_style_update()  # type: ignore[misc]
        self._base = None
        self._components = None
        self._painted: dict[int, Hashable] = {}

    @property
    def base_style(self) -> Style:
        if self._base is None:
            self._base = self.rich_style  # type: ignore[attr-defined]
        return self._base

    def _style(self, name: str) -> Style:
        if self._components is None:
            self._components = {}
        style = self._components.get(name)
        if style is None:
            style = self._components[name] = self.get_component_rich_style(name)  # type: ignore[attr-defined]
        return style


class LineView(_StyleCache, ScrollView):
    """A ScrollView painting rows with `render_line`; `repaint` refreshes changed rows only."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._painted: dict[int, Hashable] = {}  # virtual row -> key of what it showed
        self._painted_at: tuple[int, int, bool] = (-1, 0, False)

    def row_key(self, row: int) -> Hashable:
        """What virtual row `row` shows: equal keys paint equal rows."""
        raise NotImplementedError

    def repaint(self) -> None:
        """Refresh the visible rows whose key changed since the last `repaint` (all of
        them after a scroll, which Textual repaints whole anyway)."""
        top = int(self.scroll_y)
        region = self.scrollable_content_region
        height = region.height
        keys = {row: self.row_key(row) for row in range(top, top + height)}
        painted = self._painted
        where = (top, region.width, self.show_vertical_scrollbar)
        if where != self._painted_at or not painted:
            self.refresh()  # scrolled, or a scroll bar came or went
        else:
            changed = [row for row, key in keys.items() if painted.get(row) != key]
            if len(changed) * 2 > height:
                self.refresh()
            else:
                for row in changed:
                    self.refresh_line(row)
        self._painted = keys
        self._painted_at = where

    def set_virtual_height(self, rows: int) -> None:
        """Make the content `rows` high without a new screen layout when it can: Textual
        lays out the screen and repaints the whole widget whenever a virtual size changes,
        so the height never shrinks below the bottom of the view (nor below the view).
        The panes wrap or cut their rows to the width: nothing scrolls sideways."""
        width = 1
        height = self.scrollable_content_region.height
        bottom = int(self.scroll_y) + height
        wanted = max(rows, min(self.virtual_size.height, bottom), height)
        if self.virtual_size != Size(width, wanted):
            self.virtual_size = Size(width, wanted)
            if self.show_vertical_scrollbar != (wanted > height):
                # Textual re-decides the scroll bars when the widget's size changes, not
                # its virtual size (textual 8.2): ask it now.
                self._scroll_update(self.virtual_size)

    def on_resize(self, event: Resize) -> None:
        self._painted = {}


class LineLabel(_StyleCache, Widget):
    """A one-row widget showing a `Text`, painted as segments (no wrapping or alignment
    machinery) and only when the text changed."""

    DEFAULT_CSS = "LineLabel { height: 1; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.text = Text("")

    def set(self, text: Text) -> None:
        if text != self.text or text.style != self.text.style:  # (== compares text and spans)
            self.text = text
            self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.base_style
        if y:
            return Strip.blank(width, base)
        text = self.text
        plain = text.plain
        segments: list[Segment] = []
        if not text.spans and not text.style:
            segments.append(Segment(plain, base))
        else:
            segments.extend(
                Segment(seg.text, base + seg.style if seg.style else base)
                for seg in text.render(self.app.console)
            )
        strip = Strip(segments)
        if strip.cell_length > width:
            strip = strip.crop(0, max(0, width - 1)).extend_cell_length(width - 1, base)
            strip = Strip([*strip, Segment("…", base)])
        return strip.adjust_cell_length(width, base)
