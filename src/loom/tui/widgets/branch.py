"""The branch view: the current branch's full text, painted a row at a time (Line API)."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual.events import Click, Resize
from textual.geometry import Size
from textual.strip import Strip

from loom import logprobs
from loom.document import Document
from loom.tui.layout import BranchLayout, Span
from loom.tui.messages import SegmentClicked
from loom.tui.widgets.base import LineView

# Probability bands, as `loom show --probs` colours them (cli/render.PROBABILITY_BANDS).
BANDS = (0.8, 0.5, 0.2, 0.05)


def band(logprob: float) -> int:
    """0 (likely) … 4 (unlikely): the band of a token's probability."""
    p = math.exp(logprob)
    return next((i for i, floor in enumerate(BANDS) if p >= floor), len(BANDS))


class BranchView(LineView, can_focus=True):
    """Full text of the branch ending at the cursor; boundaries marked, the node emphasised."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "branch--even",
        "branch--odd",
        "branch--current",
        "branch--mark",
        "branch--caret",
        "branch--elided",
        "branch--prob-0",
        "branch--prob-1",
        "branch--prob-2",
        "branch--prob-3",
        "branch--prob-4",
    }
    DEFAULT_CSS = """
    BranchView { background: $surface; padding: 0 1; }
    BranchView > .branch--even { color: $foreground; }
    BranchView > .branch--odd { color: $foreground 80%; background: $foreground 4%; }
    BranchView > .branch--current { color: $foreground; background: $primary 18%; text-style: bold; }
    BranchView > .branch--mark { color: $accent; text-style: bold; }
    BranchView > .branch--caret { text-style: reverse; }
    BranchView > .branch--elided { color: $foreground 50%; text-style: italic; }
    BranchView > .branch--prob-0 { color: $success; }
    BranchView > .branch--prob-1 { color: $success 70%; }
    BranchView > .branch--prob-2 { color: $warning; }
    BranchView > .branch--prob-3 { color: $error 80%; }
    BranchView > .branch--prob-4 { color: $error; text-style: bold underline; }
    BranchView:nocolor > .branch--current { text-style: bold underline; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.layout_ = BranchLayout()
        self.doc: Document | None = None
        self.caret: int | None = None  # offset in the current node's text, in caret modes
        self.probs = False  # colour tokens by probability
        self._tokens: dict[int, list[tuple[int, int, int]]] = {}  # seg -> (start, end, band)
        self._pending_path: list[str] = []  # the branch to show (laid out once sized)

    # ---- state from the app -----------------------------------------------------------

    def show(self, doc: Document, path: list[str], *, follow: bool = True) -> None:
        """Paint the branch `path` (root first) of `doc`."""
        self.doc = doc
        self._pending_path = path
        if self.scrollable_content_region.width <= 1:
            return  # not laid out yet: on_resize paints it
        width = self.scrollable_content_region.width - 1
        changed = self.layout_.update(doc, path, width)
        if changed:
            self._tokens.clear()
        self._sync_size()
        if follow and changed:
            self.follow()
        self.refresh()

    def follow(self) -> None:
        """Scroll so the current node (or the caret) is in sight."""
        layout = self.layout_
        if not layout.path:
            return
        extra = 1 if layout.first else 0
        height = max(1, self.scrollable_content_region.height)
        if self.caret is not None:
            at = layout.locate(layout.current, self.caret)
            if at is not None:
                self.scroll_to_region_y(at[0] + extra, height)
                return
        first, last = layout.segment_rows(layout.current)
        top = min(last + extra - height + 1, first + extra - 1)
        self.scroll_to(y=max(0, top), animate=False, immediate=True)

    def scroll_to_region_y(self, y: int, height: int) -> None:
        if not self.scroll_y <= y < self.scroll_y + height:
            self.scroll_to(y=max(0, y - height // 2), animate=False, immediate=True)

    def _sync_size(self) -> None:
        rows = len(self.layout_.rows) + (1 if self.layout_.first else 0)
        self.virtual_size = Size(self.layout_.width, rows)

    def on_resize(self, event: Resize) -> None:
        if self.doc is not None:
            self.show(self.doc, self._pending_path)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new <= 0 and self.layout_.first and self.doc is not None:
            added = self.layout_.widen(self.doc)
            self._tokens.clear()
            self._sync_size()
            self.scroll_to(y=added, animate=False, immediate=True)

    # ---- painting ---------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        layout = self.layout_
        width = self.scrollable_content_region.width
        base = self.base_style
        index = int(self.scroll_y) + y
        if layout.first:
            if index == 0:
                note = f"⋯ {layout.first:,} earlier nodes above (scroll up to show them)"
                return Strip(
                    [Segment(note, base + self._style("branch--elided"))]
                ).adjust_cell_length(width, base)
            index -= 1
        if not 0 <= index < len(layout.rows):
            return Strip.blank(width, base)
        pieces: list[Segment] = []
        for span in layout.rows[index]:
            pieces.extend(self._paint(span, base))
        if self.caret is not None and layout.texts and self.caret >= len(layout.texts[-1]):
            at = layout.locate(layout.current, self.caret)
            if at is not None and at[0] == index:
                pieces.append(Segment(" ", base + self._style("branch--caret")))
        return Strip(pieces).adjust_cell_length(width, base)

    def _paint(self, span: Span, base: Style) -> list[Segment]:
        layout = self.layout_
        if span.is_mark:
            return [Segment(layout.text_of(span), base + self._style("branch--mark"))]
        current = span.seg == layout.current
        name = "branch--current" if current else ("branch--odd" if span.seg % 2 else "branch--even")
        style = base + self._style(name)
        text = layout.text_of(span)
        cuts: list[tuple[int, int, Style]] = []  # (start, end, style) within the span
        if self.probs:
            for start, end, level in self._token_bands(span.seg):
                lo, hi = max(start, span.start), min(end, span.end)
                if lo < hi:
                    cuts.append((lo, hi, style + self._style(f"branch--prob-{level}")))
        if current and self.caret is not None and span.start <= self.caret < span.end:
            cuts = _overlay(cuts, self.caret, self.caret + 1, style + self._style("branch--caret"))
        if not cuts:
            return [Segment(text, style)]
        out: list[Segment] = []
        pos = span.start
        for start, end, cut_style in cuts:
            if start > pos:
                out.append(Segment(text[pos - span.start : start - span.start], style))
            out.append(Segment(text[start - span.start : end - span.start], cut_style))
            pos = end
        if pos < span.end:
            out.append(Segment(text[pos - span.start :], style))
        return out

    def _token_bands(self, seg: int) -> list[tuple[int, int, int]]:
        cached = self._tokens.get(seg)
        if cached is not None:
            return cached
        out: list[tuple[int, int, int]] = []
        doc, layout = self.doc, self.layout_
        if doc is not None and 0 <= seg < len(layout.path):
            node_id = layout.path[seg]
            probs = logprobs.of(doc, node_id)
            text = doc.nodes[node_id].get("text", "")
            if probs is not None and logprobs.aligned(probs, text):
                pos = 0
                for tok, lp in zip(probs["tokens"], probs.get("lp", []), strict=False):
                    out.append((pos, pos + len(tok), band(float(lp))))
                    pos += len(tok)
        self._tokens[seg] = out
        return out

    # ---- mouse ------------------------------------------------------------------------

    def on_click(self, event: Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        layout = self.layout_
        index = int(self.scroll_y) + offset.y - (1 if layout.first else 0)
        hit = layout.hit(index, offset.x + int(self.scroll_x))
        if hit is not None and 0 <= hit[0] < len(layout.path):
            self.post_message(SegmentClicked(layout.path[hit[0]], hit[1]))


def _overlay(
    cuts: list[tuple[int, int, Style]], start: int, end: int, style: Style
) -> list[tuple[int, int, Style]]:
    """`cuts` (sorted, disjoint) with [start, end) painted in `style` on top."""
    out: list[tuple[int, int, Style]] = []
    for lo, hi, s in cuts:
        if hi <= start or lo >= end:
            out.append((lo, hi, s))
            continue
        if lo < start:
            out.append((lo, start, s))
        if hi > end:
            out.append((end, hi, s))
    out.append((start, end, style))
    out.sort(key=lambda c: c[0])
    return out
