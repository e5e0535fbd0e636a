"""The MCP server: loom's library as tools and resources for an agent.

Every tool takes `file`, a loom document path inside the allowed roots, and answers
with the CLI's JSON shapes: `node` for one node, `nodes` for several (full node
objects; `brief` leaves out their `meta`), `cursor` wherever the cursor can move.
Errors are one line, `code: message`. Mutations run under the document's writer lock
in a worker thread; generations run on the server's loop with one `BackendPool` for
the server's life, and forward `loom.events` as progress notifications.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError

from loom import __version__, ops, store
from loom.document import Document, Node
from loom.errors import LoomError, UsageError
from loom.generation import events as ev
from loom.generation.backends import BackendPool
from loom.generation.core import Generation
from loom.generation.request import GenerationRequest
from loom.mcp.roots import Roots

T = TypeVar("T")

INSTRUCTIONS = """\
loom weaves trees of text with language models. A document (FILE.loom.json) is a forest
of nodes; each node holds a segment of text, and a node's full text is its ancestors'
segments joined: a branch. The cursor is the node commands act on when you name none.
Generating from a node adds N children, each a different continuation, and records
exactly what made it. Editing a node that has children never rewrites their text: the
new text becomes a sibling version (copy-on-write). Every change can be undone.

Typical loop: open_document (create=true) -> add (a prompt) -> generate (n=3) ->
children / show to read the branches -> navigate to the one you like -> generate again.
Node ids may be given as any unique prefix, or "@" for the cursor. Paths are relative
to the server's first root directory; nothing outside its roots can be read or written.
"""

NAVIGATE = ("goto", "up", "down", "next", "prev", "root")
MAX_EXPORT_CHARS = 1_000_000  # larger exports go to a file (`out`)


def node_json(node: Node, *, brief: bool = False, full_text: bool = False) -> dict[str, Any]:
    """A node as the CLI's `--json` prints it; `brief` leaves out `meta` (records, logprobs)."""
    out = node.to_dict(full_text=full_text)
    if brief:
        out.pop("meta", None)
    return out


def build(roots: Roots, pool: BackendPool | None = None) -> MCPServer:
    """The server over `roots`; `pool` keeps models loaded across generations."""
    backends = pool or BackendPool()
    server = MCPServer("loom", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING")

    def confine(file: str) -> Path:
        try:
            return roots.resolve(file)
        except LoomError as exc:
            raise ToolError(f"{exc.code}: {exc.message}") from None

    def document(file: str) -> Path:
        path = confine(file)
        if not path.name.endswith(".json"):
            raise ToolError(f"usage: {file}: a loom document is a .loom.json file")
        return path

    async def call(fn: Callable[[], T]) -> T:
        """Run library code in a worker thread; loom's errors become one-line tool errors."""
        try:
            return await anyio.to_thread.run_sync(fn)
        except LoomError as exc:
            raise ToolError(f"{exc.code}: {exc.message}") from None

    async def read(file: str, fn: Callable[[Document], dict[str, Any]]) -> dict[str, Any]:
        path = document(file)
        return await call(lambda: fn(store.load(path)))

    async def change(file: str, fn: Callable[[Document], dict[str, Any]]) -> dict[str, Any]:
        path = document(file)

        def run() -> dict[str, Any]:
            with store.editing(path) as doc:
                out = fn(doc)
                out.setdefault("cursor", doc.cursor_id)
                return out

        return await call(run)

    # ---- documents --------------------------------------------------------------------

    @server.tool()
    async def open_document(
        file: str, create: bool = False, title: str = "", text: str | None = None
    ) -> dict[str, Any]:
        """Open a loom document (or create it with create=true) and describe it.

        Returns the document (title, node count, roots) and the cursor node with its
        full text. `text` (with create) starts the document with a first node.
        Example: {"file": "story.loom.json", "create": true, "text": "The lighthouse keeper"}
        """
        path = document(file)

        def run() -> dict[str, Any]:
            if create and path.exists():
                raise UsageError(f"{file} already exists: open it without create")
            if create:
                doc = Document.new(title=title)
                if text:
                    ops.add_child(doc, None, text)
                store.create(path, doc)
            else:
                doc = store.load(path)
            return describe(doc, path)

        return await call(run)

    def describe(doc: Document, path: Path) -> dict[str, Any]:
        cursor = doc.cursor_id
        return {
            "document": {
                "file": roots.relative(path),
                "title": doc.title,
                "nodes": len(doc.nodes),
                "roots": [r.id for r in doc.roots],
                "system": doc.system,
            },
            "node": node_json(doc.node(cursor), brief=True, full_text=True) if cursor else None,
            "cursor": cursor,
        }

    # ---- reading ------------------------------------------------------------------------

    @server.tool()
    async def show(file: str, node: str | None = None, brief: bool = True) -> dict[str, Any]:
        """A branch: the node (default: the cursor) with its full text and the ids from its
        root down to it. brief=false includes the node's generation record and logprobs."""

        def run(doc: Document) -> dict[str, Any]:
            target = doc.resolve(node)
            return {
                "node": node_json(target, brief=brief, full_text=True),
                "path": doc.path_ids(target.id),
                "cursor": doc.cursor_id,
            }

        return await read(file, run)

    @server.tool()
    async def children(file: str, node: str | None = None, brief: bool = True) -> dict[str, Any]:
        """The children of a node (default: the cursor), in order: the continuations to
        choose from. Each has its own segment text; show gives a child's full text."""

        def run(doc: Document) -> dict[str, Any]:
            parent = doc.resolve(node)
            kids = [doc.node(c) for c in doc.live_child_ids(parent.id)]
            return {
                "node": node_json(parent, brief=True),
                "nodes": [node_json(k, brief=brief) for k in kids],
                "cursor": doc.cursor_id,
            }

        return await read(file, run)

    @server.tool()
    async def tree(
        file: str, node: str | None = None, depth: int = 3, width: int = 8
    ) -> dict[str, Any]:
        """The tree around a node (default: the cursor): its path from the root, and its
        descendants `depth` levels down, at most `width` children per node. Rows are in
        drawing order with their indent; a chain of only-children is one row (`run`)."""
        from loom.view import tree_window

        def run(doc: Document) -> dict[str, Any]:
            focus = doc.resolve(node).id if (node or doc.cursor_id) else None
            rows = tree_window(doc, focus, depth=max(1, depth), width=max(1, width))
            return {
                "rows": [
                    {
                        "node": node_json(doc.node(r.node_id), brief=True),
                        "indent": r.indent,
                        "run": r.run,
                        "hidden_children": r.hidden_children,
                        "on_path": r.on_path,
                    }
                    for r in rows
                    if r.node_id in doc.nodes
                ],
                "cursor": doc.cursor_id,
            }

        return await read(file, run)

    @server.tool()
    async def search(
        file: str,
        pattern: str,
        regex: bool = False,
        ignore_case: bool = False,
        branch: bool = False,
        limit: int = 50,
    ) -> dict[str, Any]:
        """Nodes whose text contains `pattern` (a regex with regex=true), in document order.
        branch=true searches whole branches (full texts) instead of segments."""
        from loom.search import search as find

        def run(doc: Document) -> dict[str, Any]:
            found = find(
                doc, pattern, regex=regex, ignore_case=ignore_case, branch=branch, limit=limit
            )
            return {
                "nodes": [node_json(doc.node(m.node_id), brief=True) for m in found],
                "matches": [
                    {"node": m.node_id, "start": m.start, "end": m.end, "text": m.text}
                    for m in found
                ],
                "cursor": doc.cursor_id,
            }

        return await read(file, run)

    # ---- changing -----------------------------------------------------------------------

    @server.tool()
    async def add(
        file: str,
        text: str,
        parent: str | None = None,
        root: bool = False,
        kind: str = "human",
        move: bool = True,
    ) -> dict[str, Any]:
        """Add a node with `text` under `parent` (default: the cursor; root=true: a new
        root). The cursor moves to it unless move=false. Write the text with its leading
        space if it continues a sentence: a branch's full text is its segments joined."""

        def run(doc: Document) -> dict[str, Any]:
            at = None if root else (doc.resolve(parent).id if (parent or doc.cursor_id) else None)
            made = ops.add_child(doc, at, text, kind=kind, move_cursor=move)
            return {"node": node_json(made)}

        return await change(file, run)

    @server.tool()
    async def edit(file: str, node: str, text: str, in_place: bool = False) -> dict[str, Any]:
        """Replace a node's text. A node with children keeps its text (their full text
        depends on it): the new text becomes a new sibling version, returned as `node`.
        A leaf is edited in place, its earlier text kept in its history."""

        def run(doc: Document) -> dict[str, Any]:
            target = doc.resolve(node)
            result = ops.edit(doc, target.id, text, in_place=in_place)
            return {"node": node_json(result), "version_of": target.id}

        return await change(file, run)

    @server.tool()
    async def split(file: str, node: str, at: int) -> dict[str, Any]:
        """Cut a node's segment in two at character offset `at` (full texts unchanged);
        returns the new second half, which takes over the node's children."""
        return await change(
            file, lambda doc: {"node": node_json(ops.split(doc, doc.resolve(node).id, at))}
        )

    @server.tool()
    async def merge(file: str, node: str) -> dict[str, Any]:
        """Join a node onto its parent (a new parent version if the parent has other children)."""
        return await change(
            file, lambda doc: {"node": node_json(ops.merge(doc, doc.resolve(node).id))}
        )

    @server.tool()
    async def move(
        file: str, node: str, parent: str | None = None, index: int | None = None
    ) -> dict[str, Any]:
        """Re-parent a node and its subtree under `parent` (none: make it a root) at
        position `index`. Moving a node under its own descendant is refused."""

        def run(doc: Document) -> dict[str, Any]:
            target = doc.resolve(node).id
            under = doc.resolve(parent).id if parent else None
            return {"node": node_json(ops.move(doc, target, under, index=index))}

        return await change(file, run)

    @server.tool()
    async def archive(file: str, node: str, restore: bool = False) -> dict[str, Any]:
        """Delete a node and its subtree recoverably (restore=true brings them back)."""

        def run(doc: Document) -> dict[str, Any]:
            target = doc.resolve(node).id
            done = ops.restore(doc, target) if restore else ops.archive(doc, target)
            return {"node": node_json(done, brief=True)}

        return await change(file, run)

    @server.tool()
    async def navigate(
        file: str, to: str = "goto", node: str | None = None, index: int | None = None
    ) -> dict[str, Any]:
        """Move the cursor. to: goto (node), up (the parent), down (child `index`, default
        the last visited), next / prev (sibling), root. Returns the new cursor node."""
        if to not in NAVIGATE:
            raise ToolError(f"usage: to must be one of {', '.join(NAVIGATE)}")

        def run(doc: Document) -> dict[str, Any]:
            here = doc.resolve(node).id
            target = {
                "goto": lambda: here,
                "up": lambda: ops.parent_of(doc, here),
                "down": lambda: ops.child_of(doc, here, index),
                "next": lambda: ops.sibling_of(doc, here, 1),
                "prev": lambda: ops.sibling_of(doc, here, -1),
                "root": lambda: ops.root_of(doc, here),
            }[to]()
            moved = ops.goto(doc, target)
            return {"node": node_json(moved, brief=True, full_text=True)}

        return await change(file, run)

    @server.tool()
    async def bookmark(
        file: str, node: str | None = None, title: str | None = None, remove: bool = False
    ) -> dict[str, Any]:
        """Bookmark a node (default: the cursor), with an optional title; remove=true unmarks it."""

        def run(doc: Document) -> dict[str, Any]:
            target = doc.resolve(node).id
            return {
                "node": node_json(
                    ops.set_bookmark(doc, target, not remove, title=title), brief=True
                )
            }

        return await change(file, run)

    @server.tool()
    async def tag(
        file: str, tags: list[str], node: str | None = None, remove: bool = False
    ) -> dict[str, Any]:
        """Add tags to a node (default: the cursor), or remove them with remove=true."""

        def run(doc: Document) -> dict[str, Any]:
            target = doc.resolve(node).id
            done = ops.tag(doc, target, remove=tags) if remove else ops.tag(doc, target, add=tags)
            return {"node": node_json(done, brief=True)}

        return await change(file, run)

    @server.tool()
    async def undo(file: str, steps: int = 1) -> dict[str, Any]:
        """Undo the last `steps` changes (all or nothing). Every change is undoable."""
        from loom.journal import undo_steps

        return await change(file, lambda doc: {"undone": undo_steps(doc, steps)})

    @server.tool()
    async def redo(file: str, steps: int = 1) -> dict[str, Any]:
        """Redo `steps` undone changes (all or nothing)."""
        from loom.journal import redo_steps

        return await change(file, lambda doc: {"redone": redo_steps(doc, steps)})

    # ---- models ---------------------------------------------------------------------------

    @server.tool()
    async def generate(
        file: str,
        ctx: Context,
        node: str | None = None,
        n: int | None = None,
        models: list[str] | None = None,
        params: dict[str, Any] | None = None,
        presets: list[str] | None = None,
        modulation: dict[str, str] | None = None,
        emulate: str = "auto",
        cursor: str = "stay",
        brief: bool = True,
    ) -> dict[str, Any]:
        """Generate N continuations of a node (default: the cursor) as its children.

        n: children per model (default: the document's, else 4). models: model names
        (list_models; default: the default model). params: sampler settings, e.g.
        {"temperature": 0.9, "max_tokens": 60, "stop": ["\\n\\n"]}. presets: named
        parameter sets. modulation: how parameters vary across children, e.g.
        {"sweep": "temperature=0.6:1.4"}. emulate: how a chat model is made to continue
        text (auto). cursor: stay, first or last new child. Progress notifications carry
        each loom event (planned, started, text, finished, retrying, note, written) as JSON.
        """
        path = document(file)
        request = GenerationRequest(
            node=node,
            n=n,
            models=tuple(models or ()),
            params=dict(params or {}),
            presets=tuple(presets or ()),
            modulation=modulation,
            emulate=emulate,
            cursor=cursor,
        )
        from loom.generation.core import agenerate

        result = await forward(ctx, lambda sink: agenerate(path, request, sink, backends=backends))
        return generated(result, brief)

    @server.tool()
    async def say(
        file: str,
        text: str,
        ctx: Context,
        n: int | None = None,
        models: list[str] | None = None,
        params: dict[str, Any] | None = None,
        parent: str | None = None,
        brief: bool = True,
    ) -> dict[str, Any]:
        """Chat: add your turn (`text`, a user node) under `parent` (default: the cursor),
        then N assistant replies to the conversation as its children. The branch's
        user/assistant nodes are the messages; the cursor moves to the first reply."""
        from loom.chat import asay

        path = document(file)
        request = GenerationRequest(
            n=n, models=tuple(models or ()), params=dict(params or {}), cursor="first"
        )
        result = await forward(
            ctx, lambda sink: asay(path, text, request, sink, parent=parent, backends=backends)
        )
        return generated(result, brief)

    async def forward(ctx: Context, start: Callable[[ev.Sink], Any]) -> Generation:
        """Run a generation, sending each event as a progress notification, in order."""
        send, receive = anyio.create_memory_object_stream[ev.Event](math.inf)

        async def pump() -> None:
            count = 0
            async with receive:
                async for event in receive:
                    count += 1
                    message = json.dumps(event.to_dict(), ensure_ascii=False)
                    await ctx.report_progress(count, None, message)

        result: Generation | None = None
        failed: LoomError | None = None
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(pump)
            with send:
                try:
                    result = await start(send.send_nowait)
                    result.check()
                except LoomError as exc:  # raised here, not out of the task group as a group
                    failed = exc
        if failed is not None:
            raise ToolError(f"{failed.code}: {failed.message}")
        assert result is not None
        return result

    def generated(result: Generation, brief: bool) -> dict[str, Any]:
        return {
            "parent": result.parent,
            "nodes": [node_json(n, brief=brief) for n in result.nodes],
            "cursor": result.cursor,
            "warnings": result.warnings,
        }

    @server.tool()
    async def list_models() -> dict[str, Any]:
        """The models generate can use: name, provider, kind (base or chat), whether usable
        now. Keys are never shown (only the environment variable that holds one)."""
        from loom.config import all_models, default_model_name

        def run() -> dict[str, Any]:
            out = []
            for model in all_models().values():
                usable, why = model.usable()
                out.append({**model.public(), "usable": usable, "status": why})
            return {"models": out, "default": default_model_name()}

        return await call(run)

    # ---- other formats ------------------------------------------------------------------

    @server.tool()
    async def import_tree(
        file: str,
        source: str,
        format: str | None = None,
        parent: str | None = None,
        create: bool = False,
    ) -> dict[str, Any]:
        """Bring another tool's tree (OpenLoom, pyloom, Loomsidian, basemode, MiniLoom,
        JSONL, text…; detected) from `source` into `file`, under `parent` (default: as new
        roots). create=true makes `file` a new document first."""
        from loom.formats import import_file

        path, origin = document(file), confine(source)

        def run() -> dict[str, Any]:
            if create:
                store.create(path, Document.new())
            with store.editing(path) as doc:
                at = doc.resolve(parent).id if parent else None
                _, new_roots = import_file(doc, origin, format=format, parent=at)
                return {
                    "nodes": [node_json(doc.node(r), brief=True) for r in new_roots],
                    "cursor": doc.cursor_id,
                }

        return await call(run)

    @server.tool()
    async def export(
        file: str, format: str, out: str | None = None, node: str | None = None
    ) -> dict[str, Any]:
        """Write the document in another format: openloom, pyloom, loomsidian, basemode,
        jsonl, loom, text, markdown, transcript, html. With `out` (a path) the file is
        written there; without, the content is returned. `node`: the branch end (text,
        markdown) or the subtree root (tree formats)."""
        from loom import files
        from loom.formats import export as write

        path = document(file)
        target = confine(out) if out else None

        def run() -> dict[str, Any]:
            doc = store.load(path)
            at = doc.resolve(node).id if node else None
            data = write(doc, format, at)
            if target is not None:
                files.write_atomic(target, data)
                return {"format": format, "out": roots.relative(target), "bytes": len(data)}
            text = data.decode("utf-8", "replace")
            if len(text) > MAX_EXPORT_CHARS:
                raise UsageError(
                    f"the export is {len(data)} bytes: give `out` to write it to a file"
                )
            return {"format": format, "content": text}

        return await call(run)

    # ---- resources --------------------------------------------------------------------------

    @server.resource("loom://documents", mime_type="application/json")
    def documents() -> str:
        """The loom documents (*.loom.json) under the server's root directories."""
        found = [roots.relative(p) for p in roots.documents()]
        return json.dumps({"documents": found})

    @server.resource("loom://document/{+file}", mime_type="application/json")
    def document_resource(file: str) -> str:
        """A document: its title, nodes, roots and the cursor's branch."""
        try:
            path = document(file)
            return json.dumps(describe(store.load(path), path), ensure_ascii=False)
        except (LoomError, ToolError) as exc:
            raise ResourceError(getattr(exc, "message", str(exc))) from None

    @server.resource("loom://node/{node}/{+file}", mime_type="application/json")
    def node_resource(node: str, file: str) -> str:
        """One node of a document, with its full text and generation record."""
        try:
            doc = store.load(document(file))
            return json.dumps(node_json(doc.resolve(node), full_text=True), ensure_ascii=False)
        except (LoomError, ToolError) as exc:
            raise ResourceError(getattr(exc, "message", str(exc))) from None

    return server
