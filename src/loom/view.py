"""Which part of a tree to draw around the cursor: a window, not the whole forest.

A 100k-node document cannot be drawn whole, and a 10k-deep chain cannot be
drawn recursively. `tree_window` picks rows iteratively: the path from the root
to the focus, siblings along it (up to `width`), the focus's subtree to `depth`,
and runs of single children collapsed into one row. The CLI and the TUI both
draw these rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loom.document import Document


@dataclass
class Row:
    node_id: str
    indent: int  # nesting level of the row in the drawing
    run: list[str] = field(default_factory=list)  # further ids collapsed into this row (a chain)
    hidden_children: int = 0  # live children not drawn under this row
    hidden_siblings: int = 0  # set on a placeholder row: siblings not drawn here
    is_last: bool = True  # last among its drawn siblings (for tree connectors)
    on_path: bool = False  # an ancestor of the focus, or the focus itself

    @property
    def last_id(self) -> str:
        return self.run[-1] if self.run else self.node_id


def tree_window(
    doc: Document,
    focus: str | None,
    *,
    depth: int = 3,
    width: int = 8,
    collapse: bool = True,
    everything: bool = False,
) -> list[Row]:
    """Rows to draw, in order. `everything` draws the whole forest (still iteratively)."""
    if not doc.roots:
        return []
    path = set(doc.path_ids(focus)) if focus else set()
    rows: list[Row] = []
    # Stack of (node_id, indent, is_last, remaining depth below the focus or None when above it).
    roots = [r.id for r in doc.roots]
    if not everything and focus:
        roots = [doc.path_ids(focus)[0]]
    stack: list[tuple[str, int, bool, int | None]] = [
        (r, 0, i == len(roots) - 1, None) for i, r in reversed(list(enumerate(roots)))
    ]
    while stack:
        node_id, indent, is_last, budget = stack.pop()
        if budget is None and (node_id == focus or focus is None or everything):
            budget = 10**9 if everything else depth
        row = Row(node_id, indent, is_last=is_last, on_path=node_id in path)
        current = node_id
        children = doc.live_child_ids(current)
        # A chain of only-children becomes one row; the focus always gets a row of its own.
        while collapse and len(children) == 1 and current != focus and children[0] != focus:
            current = children[0]
            row.run.append(current)
            row.on_path = row.on_path or current in path
            children = doc.live_child_ids(current)
        rows.append(row)
        if budget is not None and budget <= 0:
            row.hidden_children = len(children)
            continue
        if budget is None:
            # Above the focus: show the path child and some siblings around it.
            shown = _window(children, [c for c in children if c in path], width)
        else:
            shown = children[:width]
        row.hidden_children = len(children) - len(shown)
        next_budget = None if budget is None else budget - 1
        for i, child in reversed(list(enumerate(shown))):
            child_budget = next_budget
            if budget is None and child not in path:
                child_budget = 0  # a sibling of the path: one row, its subtree folded
            stack.append(
                (child, indent + 1, i == len(shown) - 1 and row.hidden_children == 0, child_budget)
            )
    return rows


def _window(children: list[str], keep: list[str], width: int) -> list[str]:
    if len(children) <= width:
        return children
    if not keep:
        return children[:width]
    at = children.index(keep[0])
    start = max(0, min(at - width // 2, len(children) - width))
    return children[start : start + width]
