"""Moving the cursor: goto, up, down, next, prev, root."""

from __future__ import annotations

from typing import Any

import click

from loom import ops
from loom.cli.common import (
    command,
    report,
    write_doc,
)
from loom.cli.main import cli
from loom.document import Node


def _navigate(verb: str, pick: Any) -> None:
    with write_doc() as doc:
        target = pick(doc)
        ops.goto(doc, target)
        node = Node(doc, target)
    report(doc, node, verb)


@command(cli, "goto")
@click.argument("node", metavar="NODE")
def goto_cmd(node: str) -> None:
    """Move the cursor to NODE (an id, a unique prefix of one).

    \b
    Example:
      loom goto a1b2
    """
    _navigate("goto", lambda doc: doc.resolve(node).id)


@command(cli, "up")
@click.argument("steps", required=False, type=click.IntRange(min=1), default=1)
def up_cmd(steps: int) -> None:
    """Move the cursor to its parent (or STEPS ancestors up).

    \b
    Example:
      loom up 3
    """
    _navigate("up", lambda doc: ops.parent_of(doc, doc.resolve(None).id, steps))


@command(cli, "down")
@click.argument("index", required=False, type=click.IntRange(min=1))
def down_cmd(index: int | None) -> None:
    """Move to child INDEX (1-based, as `loom ls` numbers them), or to the last-visited child.

    Without INDEX, `down` re-traces the branch you were on last (else the first child).

    \b
    Examples:
      loom down      # back along the branch you came from
      loom down 2
    """
    _navigate(
        "down",
        lambda doc: ops.child_of(doc, doc.resolve(None).id, None if index is None else index - 1),
    )


@command(cli, "next")
@click.option("--bookmark", is_flag=True, help="The next bookmark in document order (wraps).")
def next_cmd(bookmark: bool) -> None:
    """Move to the next sibling (or, with --bookmark, the next bookmark).

    \b
    Examples:
      loom next
      loom next --bookmark
    """
    if bookmark:
        _navigate("next", lambda doc: ops.bookmark_from(doc, doc.cursor_id, 1))
    else:
        _navigate("next", lambda doc: ops.sibling_of(doc, doc.resolve(None).id, 1))


@command(cli, "prev")
@click.option("--bookmark", is_flag=True, help="The previous bookmark in document order (wraps).")
def prev_cmd(bookmark: bool) -> None:
    """Move to the previous sibling (or, with --bookmark, the previous bookmark).

    \b
    Example:
      loom prev
    """
    if bookmark:
        _navigate("prev", lambda doc: ops.bookmark_from(doc, doc.cursor_id, -1))
    else:
        _navigate("prev", lambda doc: ops.sibling_of(doc, doc.resolve(None).id, -1))


@command(cli, "root")
def root_cmd() -> None:
    """Move the cursor to the root of its tree.

    \b
    Example:
      loom root
    """
    _navigate("root", lambda doc: ops.root_of(doc, doc.resolve(None).id))
