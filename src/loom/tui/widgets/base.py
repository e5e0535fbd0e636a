"""What the TUI's Line API widgets share: styles looked up once per style change."""

from __future__ import annotations

from rich.style import Style
from textual.scroll_view import ScrollView


class LineView(ScrollView):
    """A ScrollView painting rows with `render_line`, with cached base and component styles.

    Textual computes `rich_style` by walking the widget's ancestors on every call; a pane
    asks for it on every row it paints, so it is kept until the styles change (a theme
    switch, focus, NO_COLOR).
    """

    _base: Style | None = None

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._base = None

    @property
    def base_style(self) -> Style:
        if self._base is None:
            self._base = self.rich_style
        return self._base

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(name)
