"""A branch's text laid out in terminal rows, built incrementally as the cursor moves.

The text flows across node boundaries (a segment starts where the previous one ended,
after a one-cell boundary mark), so the layout of segment i depends on where segment
i-1 ended. Moving to a child lays out one more segment; moving to the parent drops the
last one; only a jump to another branch lays out again from where the branches part.
On a 10,000-deep chain only a window of the last ~BUDGET characters is laid out, and
scrolling to its top widens it.

Pure Python, no Textual: the branch widget paints these rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rich.cells import get_character_cell_size

from loom.document import Document

MARK = "▏"  # drawn before every segment but the first: boundaries visible without colour
BUDGET = 20_000  # characters laid out above the cursor before the text is elided

# Document text is model output or someone else's file: control characters must not reach
# the terminal. One character for one, so offsets in the shown text are offsets in the node.
_SHOWN = str.maketrans(
    {
        **{c: chr(0x2400 + c) for c in range(0x20) if c not in (0x0A,)},
        0x09: " ",
        0x0D: " ",  # CRLF text: the CR would show as a symbol at every line end
        0x7F: "␡",
        **{c: "\ufffd" for c in range(0x80, 0xA0)},
    }
)
_TOKENS = re.compile(r"\n|[^ \n]+ *| +")


def shown(text: str) -> str:
    """`text` safe for the terminal, character for character (newlines kept)."""
    return text.translate(_SHOWN)


def cells(text: str) -> int:
    """Columns `text` takes on a terminal."""
    if text.isascii():
        return len(text)
    return sum(get_character_cell_size(ch) for ch in text)


@dataclass(frozen=True, slots=True)
class Span:
    """Characters `start:end` of the shown text of path segment `seg` on one row.

    `start == end == -1` is the boundary mark before segment `seg`.
    """

    seg: int
    start: int
    end: int

    @property
    def is_mark(self) -> bool:
        return self.start < 0


Row = list[Span]


def _common_prefix(a: list[str], b: list[str]) -> int:
    """Length of the common prefix of two id lists, by bisection on C-speed slice compares."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:  # invariant: a[:lo] == b[:lo], a[:hi+1] != b[:hi+1]
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _chop(text: str, room: int) -> int:
    """How many characters of `text` fit in `room` columns (at least one)."""
    used = 0
    for i, ch in enumerate(text):
        used += get_character_cell_size(ch)
        if used > room:
            return max(1, i)
    return len(text)


def flow(text: str, seg: int, rows: list[Row], col: int, width: int) -> int:
    """Append segment `seg`'s shown `text` to `rows` (the last one open, at column `col`),
    word-wrapped to `width`; returns the column where it ends."""
    width = max(1, width)
    row = rows[-1]
    start = 0  # where the span being built on this row starts in `text`

    def close(at: int) -> None:
        if at > start:
            row.append(Span(seg, start, at))

    for m in _TOKENS.finditer(text):
        token = m.group()
        pos = m.start()
        if token == "\n":
            close(pos)
            row = []
            rows.append(row)
            start, col = pos + 1, 0
            continue
        word = cells(token.rstrip(" ")) if token[0] != " " else 0
        if col + word > width and col > 0:
            close(pos)
            row = []
            rows.append(row)
            start, col = pos, 0
        while word > width:  # a word longer than a row: cut it
            cut = _chop(token, width - col)
            close(pos + cut)
            row = []
            rows.append(row)
            token, pos = token[cut:], pos + cut
            start, col = pos, 0
            word = cells(token.rstrip(" "))
        col = min(width, col + cells(token))
    close(len(text))
    return col


class BranchLayout:
    """The rows of the branch ending at a node, for one width. Call `update` on every change."""

    def __init__(self) -> None:
        self.width = 0
        self.path: list[str] = []  # every id from the root to the node
        self.first = 0  # index in `path` of the first segment laid out
        self.texts: list[str] = []  # raw texts of path[first:]
        self.rows: list[Row] = [[]]
        self._seg_row: list[int] = []  # per laid-out segment: its first row
        self._seg_col: list[int] = []  # and the column it starts at
        self.chars = 0  # characters laid out
        self._col = 0  # where the last row ends

    # ---- queries ----------------------------------------------------------------------

    @property
    def current(self) -> int:
        """Path index of the node the branch ends at."""
        return len(self.path) - 1

    def segment_rows(self, seg: int) -> tuple[int, int]:
        """First and last row holding segment `seg` (laid out segments only)."""
        i = seg - self.first
        first = self._seg_row[i]
        last = self._seg_row[i + 1] if i + 1 < len(self._seg_row) else len(self.rows) - 1
        if i + 1 < len(self._seg_row) and self._seg_col[i + 1] == 0 and last > first:
            last -= 1
        return first, max(first, last)

    def locate(self, seg: int, offset: int) -> tuple[int, int] | None:
        """Row and column of character `offset` of segment `seg`, if laid out."""
        if seg < self.first or seg >= len(self.path):
            return None
        first, last = self.segment_rows(seg)
        for y in range(first, min(last, len(self.rows) - 1) + 1):
            x = 0
            for span in self.rows[y]:
                if span.is_mark:
                    x += 1
                    continue
                text = self.texts[span.seg - self.first]
                if span.seg == seg and span.start <= offset < span.end:
                    return y, x + cells(shown(text[span.start : offset]))
                x += cells(shown(text[span.start : span.end]))
            if y == last:
                return y, x
        return None

    def hit(self, y: int, x: int) -> tuple[int, int] | None:
        """The segment and character offset at row `y`, column `x` (None: nothing there)."""
        if not 0 <= y < len(self.rows):
            return None
        col = 0
        last: tuple[int, int] | None = None
        for span in self.rows[y]:
            if span.is_mark:
                if col == x:
                    return span.seg, 0
                col += 1
                continue
            text = shown(self.texts[span.seg - self.first][span.start : span.end])
            for i, ch in enumerate(text):
                w = get_character_cell_size(ch)
                if col <= x < col + max(1, w):
                    return span.seg, span.start + i
                col += w
            last = (span.seg, span.end)
        return last

    def text_of(self, span: Span) -> str:
        if span.is_mark:
            return MARK
        return shown(self.texts[span.seg - self.first][span.start : span.end])

    # ---- building ---------------------------------------------------------------------

    def update(self, doc: Document, path: list[str], width: int) -> bool:
        """Lay out the branch `path` (root first) of `doc`. Returns whether rows changed.

        O(the segments that changed) plus list comparisons done in C: a move in a
        10,000-deep chain re-flows one segment.
        """
        nodes = doc.nodes
        if width != self.width or not self.path:
            self._relayout(doc, path, width)
            return True
        common = _common_prefix(path, self.path)
        # A laid-out segment whose text changed (an edit, a reload) re-flows from there.
        for seg in range(self.first, common):
            if nodes[path[seg]].get("text", "") != self.texts[seg - self.first]:
                common = seg
                break
        if common == len(path) == len(self.path):
            return False
        if common < self.first:
            self._relayout(doc, path, width)
            return True
        self._truncate(common)
        self.path = list(path)
        for seg in range(common, len(path)):
            self._append(seg, nodes[path[seg]].get("text", ""))
        if self.chars > 4 * BUDGET or (self.first and self.chars < BUDGET // 2):
            self._relayout(doc, path, width)
        return True

    def widen(self, doc: Document) -> int:
        """Lay out more of the text above (after scrolling to the top). Returns rows added."""
        if not self.first:
            return 0
        before = len(self.rows)
        self._relayout(doc, self.path, self.width, budget=2 * self.chars)
        return len(self.rows) - before

    def _relayout(
        self, doc: Document, path: list[str], width: int, budget: int = 2 * BUDGET
    ) -> None:
        nodes = doc.nodes
        first, total = len(path), 0
        while first > 0 and total < budget:  # back from the end until the budget is laid out
            first -= 1
            total += len(nodes[path[first]].get("text", ""))
        self.width = width
        self.path = list(path)
        self.first = first
        self.texts = []
        self.rows = [[]]
        self._seg_row = []
        self._seg_col = []
        self.chars = 0
        self._col = 0
        for seg in range(first, len(path)):
            self._append(seg, nodes[path[seg]].get("text", ""))

    def _truncate(self, keep: int) -> None:
        """Drop segments from path index `keep` on."""
        i = keep - self.first
        if i >= len(self._seg_row):
            return
        row, col = self._seg_row[i], self._seg_col[i]
        del self.rows[row + 1 :]
        self.rows[row] = [s for s in self.rows[row] if s.seg < keep]
        self.chars -= sum(len(t) for t in self.texts[i:])
        del self.texts[i:], self._seg_row[i:], self._seg_col[i:]
        self._col = col

    def _append(self, seg: int, raw: str) -> None:
        col = self._col
        if seg > self.first:
            if col + 1 > self.width:
                self.rows.append([])
                col = 0
            self._seg_row.append(len(self.rows) - 1)
            self._seg_col.append(col)
            self.rows[-1].append(Span(seg, -1, -1))
            col += 1
        else:
            self._seg_row.append(len(self.rows) - 1)
            self._seg_col.append(col)
        self.texts.append(raw)
        self.chars += len(raw)
        self._col = flow(shown(raw), seg, self.rows, col, self.width)
