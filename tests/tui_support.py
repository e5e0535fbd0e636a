"""Shared by the TUI tests: documents to open, and driving the app with Textual's Pilot."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import loom
from loom import jsonio, ops, store
from loom.document import Document

STORY = (
    "The lighthouse keeper woke to find the sea gone.",
    " He walked down the steps, past the rusted bell, and out onto the sand where the water had been.",
)
CHILDREN = (" The gulls were silent.", " A low sound rolled across the bay.", " He laughed.")


def story(path: Path, *, fixed: bool = False) -> dict[str, str]:
    """root → walk → three children (gulls, sound, laughed); the cursor on walk.

    `fixed` gives the nodes fixed ids (for snapshots, where the status line shows one)."""
    loom.new(path, title="story")
    names = ("root", "walk", "gulls", "sound", "laughed")
    given = {n: (f"{n[0]}{i}" * 12)[:12] if fixed else None for i, n in enumerate(names)}
    with loom.edit(path) as doc:
        root = ops.add_child(doc, None, STORY[0], node_id=given["root"]).id
        walk = ops.add_child(doc, root, STORY[1], node_id=given["walk"]).id
        kids = [
            ops.add_child(doc, walk, t, kind="model", move_cursor=False, node_id=given[n]).id
            for n, t in zip(names[2:], CHILDREN, strict=True)
        ]
        ops.goto(doc, walk)
    return {"root": root, "walk": walk, "gulls": kids[0], "sound": kids[1], "laughed": kids[2]}


def with_logprobs(path: Path, parent: str, node_id: str | None = None) -> str:
    """A generated child of `parent` whose tokens have recorded probabilities and alternatives."""
    tokens = [" The", " tide", " came", " back", "."]
    meta = {
        "logprobs": {
            "source": "test",
            "tokens": tokens,
            "lp": [-0.05, -2.5, -0.3, -0.9, -0.01],
            "top": [[], [[" sea", -0.4], [" water", -1.2]], [], [[" home", -1.5]], []],
        }
    }
    with loom.edit(path) as doc:
        node = ops.add_child(doc, parent, "".join(tokens), kind="model", meta=meta, node_id=node_id)
    return node.id


def chain_file(path: Path, depth: int, text: str = "step {i}. ") -> list[str]:
    """A chain `depth` nodes deep, written as the file's JSON directly (fast at any depth)."""
    doc = Document.new(title=f"chain {depth}")
    ids = [f"c{i:011d}" for i in range(depth)]
    nodes = doc.nodes
    for i, node_id in enumerate(ids):
        rec: dict[str, Any] = {"text": text.format(i=i), "visited": True}
        if i:
            rec["parent"] = ids[i - 1]
        if i + 1 < depth:
            rec["children"] = [ids[i + 1]]
            rec["last_child"] = ids[i + 1]
        nodes[node_id] = rec
    doc.data["roots"] = [ids[0]]
    doc.data["cursor"] = ids[-1]
    path.write_bytes(jsonio.dump_document(doc.data))
    store.load(path, full_check=True)  # the test document is a valid one
    return ids


def forest_file(path: Path, count: int, fanout: int = 4) -> list[str]:
    """A `count`-node tree, each node with up to `fanout` children (breadth-first ids)."""
    doc = Document.new(title=f"forest {count}")
    ids = [f"f{i:011d}" for i in range(count)]
    nodes = doc.nodes
    for i, node_id in enumerate(ids):
        rec: dict[str, Any] = {"text": f" node {i} says something about the sea."}
        if i:
            rec["parent"] = ids[(i - 1) // fanout]
        kids = [ids[c] for c in range(i * fanout + 1, min(count, i * fanout + fanout + 1))]
        if kids:
            rec["children"] = kids
        nodes[node_id] = rec
    doc.data["roots"] = [ids[0]]
    deep = count - 1
    doc.data["cursor"] = ids[deep]
    path.write_bytes(jsonio.dump_document(doc.data))
    return ids


def screen_text(app: Any) -> str:
    """What the terminal shows, as plain text rows."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def drive(
    path: Path,
    script: Callable[[Any, Any], Awaitable[None]],
    *,
    size: tuple[int, int] = (100, 30),
    **kwargs: Any,
) -> Any:
    """Run the TUI on `path`, let `script(app, pilot)` drive it, wait until every change is
    saved, and return the app (its session holds the document as the file now has it)."""
    from loom.tui import make_app

    app = make_app(path, **kwargs)

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await script(app, pilot)
            await app.wait_synced()

    asyncio.run(main())
    return app


async def until(pilot: Any, condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Let the app run until `condition()` holds (False if it never did within `seconds`)."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        await pilot.pause(0.05)
    return condition()
