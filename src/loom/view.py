"""Which part of a tree to draw: a window around a node, bounded in size and in cost.

Trees grow in every shape: a 40k-deep chain, a deep and bushy weave (each node's
parent among the last few), a node with 200k children. `tree_window` returns at
most a screenful of rows whatever the shape, and costs what it returns plus one
walk up the focus's ancestry:

- the focus's ancestors, the nearest `above` of them; the ones further up are one
  placeholder row ("… 39,380 levels above");
- at each level on the path, at most `width` siblings around the path, the rest
  counted in placeholder rows ("+12 more");
- the focus's subtree to `depth` levels, `width` children per node;
- chains of only-children folded into one row (`run`), at most MAX_RUN long;
- with `height`, the window shrinks (depth first, then width, then ancestors)
  until it fits that many rows.

Indentation is relative to the window: its top row is at level 0. The CLI's
`loom tree` and the TUI's tree pane both draw these rows. `iter_forest` yields
the whole forest instead (`loom tree --all`), one row at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from loom.document import Document

MAX_RUN = 1000  # nodes folded into one row at most: a longer chain continues on the next row


@dataclass
class Row:
    """One row of a drawn tree: a node (with a folded chain below it), or a placeholder.

    A placeholder stands for nodes not drawn: `hidden_siblings` siblings at this
    level, or `levels_above` ancestors above the window; its `node_id` is the
    nearest of them (where a UI goes when it is clicked).
    """

    node_id: str
    indent: int  # level in the drawing; the window's top row is at level 0
    run: list[str] = field(default_factory=list)  # further ids folded into this row (a chain)
    hidden_children: int = 0  # live children of the row's last node that are not drawn
    hidden_siblings: int = 0  # a placeholder: this many live siblings not drawn here
    is_last: bool = True  # last among the rows drawn at its level under its parent
    on_path: bool = False  # the focus or one of its ancestors
    levels_above: int = 0  # a placeholder: this many ancestors not drawn above the window

    @property
    def last_id(self) -> str:
        return self.run[-1] if self.run else self.node_id

    @property
    def placeholder(self) -> bool:
        return bool(self.hidden_siblings or self.levels_above)


def tree_window(
    doc: Document,
    focus: str | None,
    *,
    depth: int = 3,
    width: int = 5,
    above: int = 3,
    height: int | None = None,
    collapse: bool = True,
    everything: bool = False,
) -> list[Row]:
    """The rows of the window around `focus` (None: the first live root), in drawing order.

    `depth`: levels drawn below the focus; `width`: siblings (and children) drawn per
    level; `above`: ancestors drawn above the focus; `height`: the most rows wanted
    (None: no limit). `everything` returns the whole forest (see `iter_forest`).
    """
    if everything:
        return list(iter_forest(doc, collapse=collapse))
    if focus is None:
        roots = live_children(doc, None)
        if not roots:
            return []
        focus = roots[0]
    path = doc.path_ids(focus)
    kids = _Children(doc)  # each list read once, however often the window is recomputed
    while True:
        rows = _window(kids, path, depth, max(1, width), above, collapse)
        if height is None or len(rows) <= height:
            return rows
        if depth > 1:
            depth -= 1
        elif width > 2:
            width -= 1
        elif above > 1:
            above -= 1
        elif depth:
            depth = 0
        elif width > 1:
            width = 1
        elif above:
            above = 0
        else:
            return rows  # the focus and its placeholders: nothing left to leave out


def live_children(doc: Document, node_id: str | None) -> list[str]:
    """Live children of a node, or the live roots for None."""
    if node_id is None:
        return [r for r in doc.data["roots"] if not doc.archived_flag(r)]
    return doc.live_child_ids(node_id)


class _Children:
    """Live children lists, each read once (a node may have 100k children)."""

    def __init__(self, doc: Document) -> None:
        self.known: dict[str | None, list[str]] = {}
        self.doc = doc

    def __call__(self, node_id: str | None) -> list[str]:
        found = self.known.get(node_id)
        if found is None:
            found = self.known[node_id] = live_children(self.doc, node_id)
        return found


def _around(items: list[str], keep: str | None, width: int) -> tuple[int, int]:
    """The slice [start, end) of at most `width` items, centred on `keep` when given."""
    if len(items) <= width:
        return 0, len(items)
    at = items.index(keep) if keep is not None else 0
    start = max(0, min(at - (width - 1) // 2, len(items) - width))
    return start, start + width


def _fold(kids: _Children, row: Row, collapse: bool) -> list[str]:
    """Extend `row` down its chain of only-children; its last node's children."""
    children = kids(row.node_id)
    if not collapse:
        return children
    while len(children) == 1 and len(row.run) < MAX_RUN:
        row.run.append(children[0])
        children = kids(children[0])
    return children


def _level(
    kids: _Children, siblings: list[str], keep: str | None, width: int, indent: int
) -> tuple[list[Row], list[Row], Row | None]:
    """One level's rows: those before `keep`, those after, and `keep`'s own (unfilled) row."""
    start, end = _around(siblings, keep, width)
    before: list[Row] = []
    after: list[Row] = []
    own: Row | None = None
    if start:
        before.append(Row(siblings[start - 1], indent, hidden_siblings=start, is_last=False))
    for sibling in siblings[start:end]:
        if sibling == keep:
            own = Row(sibling, indent, on_path=True, is_last=False)
            continue
        row = Row(sibling, indent, is_last=False)
        row.hidden_children = len(kids(sibling))
        (after if own is not None else before).append(row)
    if end < len(siblings):
        after.append(Row(siblings[end], indent, hidden_siblings=len(siblings) - end))
    last = after[-1] if after else own if own is not None else before[-1] if before else None
    if last is not None:
        last.is_last = True
    return before, after, own


def _window(
    kids: _Children, path: list[str], depth: int, width: int, above: int, collapse: bool
) -> list[Row]:
    focus = path[-1]
    top = max(0, len(path) - 1 - above)
    rows: list[Row] = []
    indent = 0
    if top:
        rows.append(Row(path[top - 1], 0, levels_above=top, on_path=True))
        indent = 1
    trailing: list[list[Row]] = []  # each level's rows after the path, emitted innermost first
    parent = path[top - 1] if top else None
    i = top
    while True:
        siblings = kids(parent)
        node = path[i]
        if node not in siblings:  # an archived focus or ancestor: drawn all the same
            siblings = [node]
        before, after, own = _level(kids, siblings, node, width, indent)
        assert own is not None
        rows.extend(before)
        trailing.append(after)
        own.is_last = not after
        rows.append(own)
        if node == focus:
            _subtree(kids, own, kids(node), depth, width, collapse, rows)
            break
        # Down the path: a chain of only-children above the focus folds into this row.
        children = kids(node)
        while (
            collapse
            and children == [path[i + 1]]
            and path[i + 1] != focus
            and len(own.run) < MAX_RUN
        ):
            i += 1
            own.run.append(path[i])
            children = kids(path[i])
        parent = path[i]
        i += 1
        indent += 1
    for after in reversed(trailing):
        rows.extend(after)
    return rows


def _subtree(
    kids: _Children,
    row: Row,
    children: list[str],
    depth: int,
    width: int,
    collapse: bool,
    rows: list[Row],
) -> None:
    """Append the rows of `row`'s subtree (`row` is drawn already): `depth` levels, `width`
    children per node, depth-first."""
    stack: list[tuple[Row, list[str], int, bool]] = [(row, children, depth, False)]
    while stack:
        current, below, budget, emit = stack.pop()
        if emit:
            rows.append(current)
        if budget <= 0:
            current.hidden_children = len(below)
            continue
        level = current.indent + 1
        items: list[tuple[Row, list[str], int, bool]] = []
        for kid in below[:width]:
            child = Row(kid, level, is_last=False)
            items.append((child, _fold(kids, child, collapse), budget - 1, True))
        if len(below) > width:
            more = Row(below[width], level, hidden_siblings=len(below) - width, is_last=False)
            items.append((more, [], 0, True))
        if items:
            items[-1][0].is_last = True
        stack.extend(reversed(items))


def iter_forest(
    doc: Document, *, collapse: bool = True, include_archived: bool = False
) -> Iterator[Row]:
    """Every node of the forest as rows, depth-first, one at a time (indent: true depth).

    Memory is the stack of unfinished levels, so a million rows stream in constant space
    per row.
    """
    roots = [r for r in doc.data["roots"] if include_archived or not doc.nodes[r].get("archived")]
    stack: list[tuple[str, int, bool]] = [
        (r, 0, i == len(roots) - 1) for i, r in reversed(list(enumerate(roots)))
    ]
    while stack:
        node_id, indent, is_last = stack.pop()
        row = Row(node_id, indent, is_last=is_last)
        kids = _children(doc, node_id, include_archived)
        while collapse and len(kids) == 1 and len(row.run) < MAX_RUN:
            row.run.append(kids[0])
            kids = _children(doc, kids[0], include_archived)
        yield row
        stack.extend(
            (kid, indent + 1, i == len(kids) - 1) for i, kid in reversed(list(enumerate(kids)))
        )


def _children(doc: Document, node_id: str, include_archived: bool) -> list[str]:
    if include_archived:
        return list(doc.peek(node_id).get("children", ()))
    return doc.live_child_ids(node_id)
