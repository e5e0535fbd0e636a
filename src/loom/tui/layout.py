"""A branch's text laid out in terminal rows, built incrementally as the cursor moves.

The text flows across node boundaries (a segment starts where the previous one ended,
after a one-cell boundary mark), so the layout of segment i depends on where segment
i-1 ended. Moving to a child lays out one more segment; moving to the parent drops the
last one; only a jump to another branch lays out again from where the branches part.
On a 10,000-deep chain only a window of the last ~BUDGET characters is laid out, and
scrolling to its top widens it.

A conversation (a branch with chat roles, docs/chat.md) is laid out as turns, as `loom
show` prints it: a node that starts a message of another role starts a turn, under a row
naming its role, after a blank row; a node that starts a turn of the same role (`say`
marks them) starts a paragraph; the other nodes flow on after a mark. Roles are read as
`loom.generation.context.context_for(mode="chat")` reads them: text before the first
node with a chat role belongs to the first user message.

Pure Python, no Textual: the branch widget paints these rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rich.cells import get_character_cell_size

from loom.document import Document
from loom.generation.context import CHAT_KINDS, ROLE_OF_KIND, TURN_KEY

MARK = "▏"  # drawn before every segment but the first: boundaries visible without colour
UNREAD = "•"  # the mark (or after the role) of a node never visited
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


# How a segment starts (its lead).
FLOW = 0  # on the row the text before it ends on, after a mark
PARAGRAPH = 1  # on a row of its own after a blank row, after a mark (same role, new turn)
TURN = 2  # under a row naming its role, after a blank row (a message of another role)


@dataclass(frozen=True, slots=True)
class Span:
    """Characters `start:end` of the shown text of path segment `seg` on one row.

    `start == end == -1` is the boundary mark before segment `seg`; `-2` is the row naming
    the role of the turn segment `seg` starts.
    """

    seg: int
    start: int
    end: int

    @property
    def is_mark(self) -> bool:
        return self.start == -1

    @property
    def is_label(self) -> bool:
        return self.start == -2


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


def flow(text: str, seg: int, rows: list[Row], col: int, width: int, begin: int = 0) -> int:
    """Append segment `seg`'s shown `text` from character `begin` to `rows` (the last one
    open, at column `col`), word-wrapped to `width`; returns the column where it ends."""
    width = max(1, width)
    row = rows[-1]
    start = begin  # where the span being built on this row starts in `text`

    def close(at: int) -> None:
        if at > start:
            row.append(Span(seg, start, at))

    for m in _TOKENS.finditer(text, begin):
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


def role_of(rec: dict[str, Any], in_conversation: bool) -> str:
    """The role a node speaks in, in a conversation (`in_conversation`: at or after the
    first node with a chat role; before it, text belongs to the first user message)."""
    if not in_conversation:
        return "user"
    return ROLE_OF_KIND.get(str(rec.get("kind", "human")), "user")


def _first_of(nodes: Any, path: list[str], start: int, kinds: frozenset[str]) -> int:
    """Index of the first node of `path[start:]` whose kind is in `kinds` (else len(path))."""
    for i in range(start, len(path)):
        if nodes[path[i]].get("kind") in kinds:
            return i
    return len(path)


_SYSTEM = frozenset({"system"})


class BranchLayout:
    """The rows of the branch ending at a node, for one width. Call `update` on every change."""

    def __init__(self) -> None:
        self.width = 0
        self.path: list[str] = []  # every id from the root to the node
        self.first = 0  # index in `path` of the first segment laid out
        self.texts: list[str] = []  # raw texts of path[first:]
        self.rows: list[Row] = [[]]
        self.chat_from = 0  # index in `path` of the first node with a chat role (len: none)
        self.system_at = 0  # … and of the first system turn
        self.serials: list[int] = []  # per laid-out segment: changes whenever it is re-flowed
        self._serial = 0
        self._kinds: list[Any] = []  # per laid-out segment: what its lead was made of
        self._seg_row: list[int] = []  # per laid-out segment: its first row
        self._before: list[tuple[int, int, int]] = []  # rows, last row's spans, column before it
        self.chars = 0  # characters laid out
        self._col = 0  # where the last row ends

    # ---- queries ----------------------------------------------------------------------

    @property
    def current(self) -> int:
        """Path index of the node the branch ends at."""
        return len(self.path) - 1

    @property
    def conversation(self) -> bool:
        """Whether the branch is a conversation (a node on it has a chat role)."""
        return self.chat_from < len(self.path)

    def serial(self, seg: int) -> int:
        return self.serials[seg - self.first]

    def segment_rows(self, seg: int) -> tuple[int, int]:
        """First and last row holding segment `seg` (laid out segments only)."""
        i = seg - self.first
        first = self._seg_row[i]
        if i + 1 < len(self._before):
            rows, spans, _ = self._before[i + 1]
            last = rows - 1 if spans or rows - 1 == first else rows - 2
        else:
            last = len(self.rows) - 1
            if not self.rows[last] and last > first:
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
                if span.is_label:
                    continue
                text = self.texts[span.seg - self.first]
                if span.seg == seg and offset < span.start:
                    return y, x  # in the blanks a turn's first row leaves out
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
            if span.is_label:
                return span.seg, 0
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
        if span.is_label:
            return ""
        return shown(self.texts[span.seg - self.first][span.start : span.end])

    def role(self, nodes: Any, seg: int) -> str:
        """The role segment `seg` speaks in (a conversation's segments only)."""
        return role_of(nodes[self.path[seg]], seg >= self.chat_from)

    # ---- building ---------------------------------------------------------------------

    def update(self, doc: Document, path: list[str], width: int, *, changed: bool = True) -> bool:
        """Lay out the branch `path` (root first) of `doc`. Returns whether rows changed.

        `changed`: the document may have changed since the last update (anything but a
        move): laid-out segments whose text or role changed are re-flowed. A move costs
        the segments that changed plus list comparisons done in C: a move in a
        10,000-deep chain re-flows one segment.
        """
        nodes = doc.nodes
        if width != self.width or not self.path:
            self._relayout(doc, path, width)
            return True
        common = _common_prefix(path, self.path)
        if changed:
            for seg in range(self.first, common):
                rec = nodes[path[seg]]
                i = seg - self.first
                if rec.get("text", "") != self.texts[i] or _lead_of(rec) != self._kinds[i]:
                    common = seg
                    break
        chat_from, system_at = self.chat_from, self.system_at
        if chat_from >= common:  # the first chat node is not in the common part
            chat_from = _first_of(nodes, path, common, CHAT_KINDS)
        if system_at >= common:
            system_at = _first_of(nodes, path, common, _SYSTEM)
        if (chat_from < len(path)) != self.conversation and self.first == 0:
            common = 0  # a text became a conversation (or back): the first segment's lead
        if common == len(path) == len(self.path):
            return False
        if common < self.first:
            self._relayout(doc, path, width)
            return True
        self._truncate(common)
        self.path = list(path)
        self.chat_from, self.system_at = chat_from, system_at
        for seg in range(common, len(path)):
            self._append(nodes, seg)
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
        self.chat_from = _first_of(nodes, path, 0, CHAT_KINDS)
        self.system_at = _first_of(nodes, path, 0, _SYSTEM)
        self.texts = []
        self.rows = [[]]
        self.serials = []
        self._kinds = []
        self._seg_row = []
        self._before = []
        self.chars = 0
        self._col = 0
        for seg in range(first, len(path)):
            self._append(nodes, seg)

    def _truncate(self, keep: int) -> None:
        """Drop segments from path index `keep` on: the rows return to what they were
        before the first of them was laid out."""
        i = keep - self.first
        if i >= len(self._before):
            return
        rows, spans, col = self._before[i]
        del self.rows[rows:]
        self.rows[-1] = self.rows[-1][:spans]
        self.chars -= sum(len(t) for t in self.texts[i:])
        del self.texts[i:], self.serials[i:], self._kinds[i:], self._seg_row[i:]
        del self._before[i:]
        self._col = col

    def lead(self, nodes: Any, seg: int) -> int:
        """How segment `seg` starts: FLOW, PARAGRAPH or TURN (see the module docstring)."""
        if not self.conversation:
            return FLOW
        role = self.role(nodes, seg)
        if seg == 0 or role != self.role(nodes, seg - 1):
            return TURN
        turn = (nodes[self.path[seg]].get("meta") or {}).get(TURN_KEY)
        return PARAGRAPH if seg == self.chat_from or turn else FLOW

    def _append(self, nodes: Any, seg: int) -> None:
        rows = self.rows
        rec = nodes[self.path[seg]]
        raw = rec.get("text", "")
        col = self._col
        self._before.append((len(rows), len(rows[-1]), col))
        lead = self.lead(nodes, seg)
        top = len(rows) == 1 and not rows[0]  # nothing above on this layout
        begin = 0
        if lead == FLOW:
            if seg > self.first:
                if col + 1 > self.width:
                    rows.append([])
                    col = 0
                rows[-1].append(Span(seg, -1, -1))
                col += 1
            self._seg_row.append(len(rows) - 1)
        else:
            begin = len(raw) - len(raw.lstrip())  # as a transcript shows a turn
            if not top:
                if rows[-1]:
                    rows.append([])  # the row the text above ends on is closed…
                rows.append([])  # …and the one left open above stays blank
            if lead == TURN:
                rows[-1].append(Span(seg, -2, -2))
                rows.append([])
                self._seg_row.append(len(rows) - 2)
                col = 0
            else:
                self._seg_row.append(len(rows) - 1)
                col = 0
                if not top:
                    rows[-1].append(Span(seg, -1, -1))
                    col = 1
        self._serial += 1
        self.serials.append(self._serial)
        self._kinds.append(_lead_of(rec))
        self.texts.append(raw)
        self.chars += len(raw)
        self._col = flow(shown(raw), seg, rows, col, self.width, begin)


def _lead_of(rec: dict[str, Any]) -> tuple[Any, bool]:
    """What a node's lead depends on besides its place: its kind and whether it starts a turn."""
    return rec.get("kind"), bool((rec.get("meta") or {}).get(TURN_KEY))
