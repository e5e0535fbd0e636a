"""The MCP server: loom's library as tools and resources for an agent.

Every tool takes `file`, a loom document path inside the allowed roots, and answers
exactly what its CLI twin prints with `--json` (`loom.payloads` builds both; `command`
names the twin, so `loom schema COMMAND` is the tool's answer schema): `node` for one
node object, `nodes` for several (brief: no `meta`), `cursor` in every answer about a
document, `fields` where the CLI has `--fields`. A failure is the contract's error
object as an error result. Mutations run under the document's writer lock in a worker
thread; generations run on the server's loop with one `BackendPool` for the server's
life, and forward `loom.events` as progress notifications.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError, UnexpectedToolError
from mcp.types import CallToolResult, InputRequiredResult, TextContent
from pydantic import ValidationError

from loom import __version__, ops, payloads, store
from loom.document import Document
from loom.errors import LoomError, UsageError
from loom.generation import events as ev
from loom.generation.backends import BackendPool
from loom.generation.core import Generation
from loom.generation.request import GenerationRequest
from loom.mcp.roots import Roots
from loom.payloads import Fields

T = TypeVar("T")
Answer = dict[str, Any]
log = logging.getLogger(__name__)

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

Answers are loom's JSON contract, the same objects `loom COMMAND --json` prints
({"ok": true, "command": ..., ...}; `loom schema COMMAND` is their JSON Schema): `node`
is one node object, `nodes` a list of them (without `meta`, the generation record and
token probabilities), `cursor` the cursor's id afterwards. A single node has every
field. Tools that answer nodes take `fields`, as `loom --fields`: all, brief (all but
meta), names ("id,text,children"), full_text (the branch's text), meta.KEY. A failure
is an error result holding {"ok": false, "error": {"code", "message", "details"?}}.
"""

NAVIGATE = ("goto", "up", "down", "next", "prev", "root")
MAX_EXPORT_CHARS = 1_000_000  # larger exports go to a file (`out`)


def chosen_fields(spec: str | None, *, listing: bool = False) -> Fields:
    """`fields` as given, else the contract's default: brief in lists, all for one node."""
    if spec is None:
        return payloads.BRIEF if listing else payloads.ALL
    return Fields.parse(spec)


def failure(code: str, message: str, details: dict[str, Any] | None = None) -> CallToolResult:
    """A tool's failure: the contract's error object, as text and as structured content."""
    error = payloads.error(code, message, details)
    text = json.dumps(error, ensure_ascii=False)
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=error, is_error=True
    )


class Server(MCPServer):
    """MCPServer whose every tool failure is the contract's error object: loom's own errors
    with their code, arguments that fail the tool's input schema as usage, a crash as
    internal (logged in full here, one line for the client)."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:  # the SDK's wrapper: what was raised is its __cause__
            cause = exc.__cause__
            if isinstance(cause, LoomError):
                return failure(cause.code, cause.message, cause.details)
            if isinstance(cause, ValidationError):
                wrong = "; ".join(
                    f"{'.'.join(str(part) for part in e['loc']) or 'arguments'}: {e['msg']}"
                    for e in cause.errors()
                )
                return failure("usage", f"{name}: {wrong}")
            if isinstance(exc, UnexpectedToolError):
                log.error("tool %s failed", name, exc_info=cause)
                kind = type(cause).__name__ if cause is not None else "error"
                return failure("internal", f"internal error in {name}: {kind} (please report it)")
            return failure("usage", str(exc))  # an unknown tool


def build(roots: Roots, pool: BackendPool | None = None) -> MCPServer:
    """The server over `roots`; `pool` keeps models loaded across generations."""
    backends = pool or BackendPool()
    server = Server("loom", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING")

    def document(file: str) -> Path:
        path = roots.resolve(file)
        if not path.name.endswith(".json"):
            raise UsageError(f"{file}: a loom document is a .loom.json file")
        return path

    async def call(fn: Callable[[], T]) -> T:
        """Run library code in a worker thread (loom's errors pass through)."""
        return await anyio.to_thread.run_sync(fn)

    async def read(file: str, fn: Callable[[Document], Answer]) -> Answer:
        path = document(file)
        return await call(lambda: fn(store.load(path)))

    async def change(file: str, fn: Callable[[Document], Answer]) -> Answer:
        """Run `fn` under the writer lock; its answer is given once the document is saved."""
        path = document(file)

        def run() -> Answer:
            with store.editing(path) as doc:
                out = fn(doc)
            out["cursor"] = doc.cursor_id
            return out

        return await call(run)

    # ---- documents --------------------------------------------------------------------

    @server.tool()
    async def open_document(
        file: str, create: bool = False, title: str = "", text: str | None = None
    ) -> Answer:
        """Open a loom document (or create it with create=true) and describe it.

        Answers as `loom info --json` (opening: `document` with its counts, `stats`,
        `cursor`) or `loom new --json` (creating: `document`, `cursor`). `text` (with
        create) starts the document with a first node. show gives the cursor's text.
        Example: {"file": "story.loom.json", "create": true, "text": "The lighthouse keeper"}
        """
        path = document(file)

        def run() -> Answer:
            if not create:
                doc = store.load(path)
                return payloads.answer(
                    "info",
                    document=payloads.document(doc, path),
                    stats=payloads.stats(doc),
                    cursor=doc.cursor_id,
                )
            if path.exists():
                raise UsageError(f"{file} already exists: open it without create")
            doc = Document.new(title=title)
            if text:
                ops.add_child(doc, None, text)
            store.create(path, doc)
            return payloads.answer(
                "new", document=payloads.document(doc, path), cursor=doc.cursor_id
            )

        return await call(run)

    # ---- reading ------------------------------------------------------------------------

    @server.tool()
    async def show(file: str, node: str | None = None, fields: str | None = None) -> Answer:
        """A branch, as `loom show --json`: `node` (default: the cursor; every field,
        its generation record and token probabilities in `meta` included), `path` (the ids
        from its root down to it) and `text` (the branch's full text). fields="brief"
        leaves out meta."""
        chosen = chosen_fields(fields)

        def run(doc: Document) -> Answer:
            target = doc.resolve(node)
            return payloads.answer(
                "show",
                node=payloads.node(target, chosen),
                path=doc.path_ids(target.id),
                text=doc.full_text(target.id),
                cursor=doc.cursor_id,
            )

        return await read(file, run)

    @server.tool()
    async def children(
        file: str,
        node: str | None = None,
        offset: int = 0,
        limit: int = 100,
        fields: str | None = None,
    ) -> Answer:
        """The children of a node (default: the cursor), in order: the continuations to
        choose from. As `loom ls --json`: `node` (the parent) and `nodes` (brief), a page
        of `limit` from `offset`, with `total` and `next_offset` (null after the last).
        Each child's `text` is its own segment; show gives its full text."""
        chosen = chosen_fields(fields, listing=True)
        start, size = max(0, offset), max(1, limit)

        def run(doc: Document) -> Answer:
            target = doc.resolve(node)
            kids = doc.live_child_ids(target.id)
            page = kids[start : start + size]
            return payloads.answer(
                "ls", **payloads.children_page(target, kids, start, page, chosen)
            )

        return await read(file, run)

    @server.tool()
    async def tree(
        file: str,
        node: str | None = None,
        depth: int = 3,
        width: int = 8,
        whole: bool = False,
        fields: str | None = None,
    ) -> Answer:
        """The tree around a node (default: the cursor), as `loom tree --json` shapes it:
        `roots` (every root's id) and `nodes` (brief), depth first. By default a window:
        the path from the root to the node, its siblings and its descendants `depth`
        levels down, at most `width` children per node; a node's `children` lists all its
        live children, so ids missing from `nodes` are the ones not shown. whole=true
        lists the whole forest, deleted nodes included (as `loom tree --all --json`)."""
        from loom.view import window_ids

        chosen = chosen_fields(fields, listing=True)

        def run(doc: Document) -> Answer:
            if whole:
                ids = list(doc.walk(include_archived=True))
            else:
                focus = doc.resolve(node).id if (node or doc.cursor_id) else None
                ids = window_ids(doc, focus, depth=max(1, depth), width=max(1, width))
            return payloads.answer(
                "tree",
                roots=doc.root_ids,
                nodes=payloads.nodes(doc, ids, chosen),
                cursor=doc.cursor_id,
            )

        return await read(file, run)

    @server.tool()
    async def search(
        file: str,
        pattern: str,
        regex: bool = False,
        ignore_case: bool = False,
        branch: bool = False,
        limit: int = 50,
        fields: str | None = None,
    ) -> Answer:
        """Nodes whose text contains `pattern` (a regex with regex=true), in document order,
        as `loom search --json`: `matches`, each with its `node` (brief), `start`, `end`
        and `match` (the matched text). branch=true searches whole branches (full texts)
        instead of segments; offsets are then into the full text. No match: matches=[]."""
        from loom.search import search as find

        chosen = chosen_fields(fields, listing=True)

        def run(doc: Document) -> Answer:
            found = find(
                doc,
                pattern,
                regex=regex,
                ignore_case=ignore_case,
                branch=branch,
                limit=max(1, limit),
            )
            return payloads.answer(
                "search",
                matches=[payloads.match(doc, m, chosen) for m in found],
                cursor=doc.cursor_id,
            )

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
        fields: str | None = None,
    ) -> Answer:
        """Add a node with `text` under `parent` (default: the cursor; root=true: a new
        root). The cursor moves to it unless move=false. Write the text with its leading
        space if it continues a sentence: a branch's full text is its segments joined.
        As `loom add --json`: the new `node` and its `parent` id."""
        chosen = chosen_fields(fields)

        def run(doc: Document) -> Answer:
            at = None if root else (doc.resolve(parent).id if (parent or doc.cursor_id) else None)
            made = ops.add_child(doc, at, text, kind=kind, move_cursor=move)
            return payloads.answer("add", node=payloads.node(made, chosen), parent=made.parent_id)

        return await change(file, run)

    @server.tool()
    async def edit(
        file: str, node: str, text: str, in_place: bool = False, fields: str | None = None
    ) -> Answer:
        """Replace a node's text. A node with children keeps its text (their full text
        depends on it): the new text becomes a new sibling version. A leaf is edited in
        place, its earlier text kept in its history. As `loom edit --json`: `node` holds
        the new text, `original` is the id edited, `new_version` says a sibling version
        was made (copy-on-write), `changed` is false when the text was already that."""
        chosen = chosen_fields(fields)

        def run(doc: Document) -> Answer:
            target = doc.resolve(node).id
            changed = doc.node(target).text != text
            result = ops.edit(doc, target, text, in_place=in_place)
            return payloads.answer(
                "edit",
                node=payloads.node(result, chosen),
                original=target,
                new_version=result.id != target,
                changed=changed,
            )

        return await change(file, run)

    @server.tool()
    async def split(file: str, node: str, at: int, fields: str | None = None) -> Answer:
        """Cut a node's segment in two at character offset `at` (negative: from the end;
        full texts unchanged). As `loom split --json`: `node` is the new second half,
        which takes over the node's children; `parent` is the node that kept the head."""
        chosen = chosen_fields(fields)

        def run(doc: Document) -> Answer:
            target = doc.resolve(node).id
            tail = ops.split(doc, target, at)
            return payloads.answer("split", node=payloads.node(tail, chosen), parent=target)

        return await change(file, run)

    @server.tool()
    async def merge(file: str, node: str, fields: str | None = None) -> Answer:
        """Join a node onto its parent (a new parent version if the parent has other
        children, so their branches keep their text). As `loom merge --json`: `node`
        holds the joined text."""
        chosen = chosen_fields(fields)

        def run(doc: Document) -> Answer:
            joined = ops.merge(doc, doc.resolve(node).id)
            return payloads.answer("merge", node=payloads.node(joined, chosen))

        return await change(file, run)

    @server.tool()
    async def move(
        file: str,
        node: str,
        parent: str | None = None,
        index: int | None = None,
        fields: str | None = None,
    ) -> Answer:
        """Re-parent a node and its subtree under `parent` (none: make it a root) at
        position `index` (0-based; default: last). Moving a node under its own
        descendant is refused. As `loom mv --json`: the moved `node`, its `parent`."""
        chosen = chosen_fields(fields)

        def run(doc: Document) -> Answer:
            target = doc.resolve(node).id
            under = doc.resolve(parent).id if parent else None
            moved = ops.move(doc, target, under, index=index)
            return payloads.answer("mv", node=payloads.node(moved, chosen), parent=moved.parent_id)

        return await change(file, run)

    @server.tool()
    async def archive(
        file: str, node: str, restore: bool = False, fields: str | None = None
    ) -> Answer:
        """Delete a node and its subtree recoverably, as `loom rm --json` (`node`,
        `purged` false, `node_count` deleted); restore=true brings them back, as
        `loom restore --json` (`node`)."""
        chosen = chosen_fields(fields)

        def run(doc: Document) -> Answer:
            target = doc.resolve(node).id
            if restore:
                back = ops.restore(doc, target)
                return payloads.answer("restore", node=payloads.node(back, chosen))
            gone = ops.archive(doc, target)
            return payloads.answer(
                "rm",
                node=payloads.node(gone, chosen),
                purged=False,
                node_count=len(doc.subtree_ids(target)),
            )

        return await change(file, run)

    @server.tool()
    async def navigate(
        file: str,
        to: str = "goto",
        node: str | None = None,
        index: int | None = None,
        fields: str | None = None,
    ) -> Answer:
        """Move the cursor. to: goto (node), up (the parent), down (child `index`, 0-based,
        default the last visited), next / prev (sibling), root; from `node` (default: the
        cursor). As `loom goto --json` (`command` is `to`): the `node` moved to.
        fields="brief,full_text" gives its branch's text without meta."""
        if to not in NAVIGATE:
            raise UsageError(f"to must be one of {', '.join(NAVIGATE)}, not {to!r}")
        chosen = chosen_fields(fields)

        def run(doc: Document) -> Answer:
            here = doc.resolve(node).id
            target = {
                "goto": lambda: here,
                "up": lambda: ops.parent_of(doc, here),
                "down": lambda: ops.child_of(doc, here, index),
                "next": lambda: ops.sibling_of(doc, here, 1),
                "prev": lambda: ops.sibling_of(doc, here, -1),
                "root": lambda: ops.root_of(doc, here),
            }[to]()
            return payloads.answer(to, node=payloads.node(ops.goto(doc, target), chosen))

        return await change(file, run)

    @server.tool()
    async def bookmark(
        file: str,
        node: str | None = None,
        title: str | None = None,
        remove: bool = False,
        fields: str | None = None,
    ) -> Answer:
        """Bookmark a node (default: the cursor), with an optional title; remove=true
        unmarks it. As `loom bookmark --json`: the `node` (its `bookmark` field)."""
        chosen = chosen_fields(fields)

        def run(doc: Document) -> Answer:
            target = doc.resolve(node).id
            marked = ops.set_bookmark(doc, target, not remove, title=title)
            return payloads.answer("bookmark", node=payloads.node(marked, chosen))

        return await change(file, run)

    @server.tool()
    async def tag(
        file: str,
        tags: list[str],
        node: str | None = None,
        remove: bool = False,
        fields: str | None = None,
    ) -> Answer:
        """Add tags to a node (default: the cursor), or remove them with remove=true.
        As `loom tag --json`: the `node` (its `tags` field)."""
        chosen = chosen_fields(fields)

        def run(doc: Document) -> Answer:
            target = doc.resolve(node).id
            done = ops.tag(doc, target, remove=tags) if remove else ops.tag(doc, target, add=tags)
            return payloads.answer("tag", node=payloads.node(done, chosen))

        return await change(file, run)

    @server.tool()
    async def undo(file: str, steps: int = 1) -> Answer:
        """Undo the last `steps` changes (all or nothing). Every change is undoable.
        As `loom undo --json`: `changes` undone (op, summary, at), in order."""
        from loom.journal import undo_steps

        def run(doc: Document) -> Answer:
            done = undo_steps(doc, steps)
            return payloads.answer("undo", changes=[payloads.change(e) for e in done])

        return await change(file, run)

    @server.tool()
    async def redo(file: str, steps: int = 1) -> Answer:
        """Redo `steps` undone changes (all or nothing). As `loom redo --json`:
        `changes` redone, in order."""
        from loom.journal import redo_steps

        def run(doc: Document) -> Answer:
            done = redo_steps(doc, steps)
            return payloads.answer("redo", changes=[payloads.change(e) for e in done])

        return await change(file, run)

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
        fields: str | None = None,
    ) -> Answer:
        """Generate N continuations of a node (default: the cursor) as its children.

        n: children per model (default: the document's, else 4). models: model names
        (list_models; default: the default model). params: sampler settings, e.g.
        {"temperature": 0.9, "max_tokens": 60, "stop": ["\\n\\n"]}. presets: named
        parameter sets. modulation: how parameters vary across children, e.g.
        {"sweep": "temperature=0.6:1.4"}. emulate: how a chat model is made to continue
        text (auto). cursor: stay, first or last new child. As `loom gen --json`:
        `parent`, the new `nodes` (brief), `cursor`, `warnings`. A failed run is an
        error whose details.nodes lists the branches kept. Progress notifications carry
        each loom event (planned, started, text, finished, retrying, note, written) as JSON.
        """
        chosen = chosen_fields(fields, listing=True)
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
        return payloads.answer("gen", **payloads.generation(result, chosen))

    @server.tool()
    async def say(
        file: str,
        text: str,
        ctx: Context,
        n: int | None = None,
        models: list[str] | None = None,
        params: dict[str, Any] | None = None,
        parent: str | None = None,
        fields: str | None = None,
    ) -> Answer:
        """Chat: add your turn (`text`, a user node) under `parent` (default: the cursor),
        then N assistant replies to the conversation as its children. The branch's
        user/assistant nodes are the messages; the cursor moves to the first reply.
        As `loom say --json`: `parent` (your turn), the replies as `nodes`, `cursor`."""
        from loom.chat import asay

        chosen = chosen_fields(fields, listing=True)
        path = document(file)
        request = GenerationRequest(
            n=n, models=tuple(models or ()), params=dict(params or {}), cursor="first"
        )
        result = await forward(
            ctx, lambda sink: asay(path, text, request, sink, parent=parent, backends=backends)
        )
        return payloads.answer("say", **payloads.generation(result, chosen))

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
            raise failed
        assert result is not None
        return result

    @server.tool()
    async def list_models() -> Answer:
        """The models generate can use, as `loom models --json`: `default` and `models`
        (name, provider, kind (base or chat), whether usable now and why not). Keys are
        never shown (only the environment variable that holds one)."""
        from loom.config import all_models, default_model_name

        def run() -> Answer:
            default = default_model_name()
            rows = [payloads.model(m, default) for m in all_models().values()]
            return payloads.answer("models", default=default, models=rows)

        return await call(run)

    # ---- other formats ------------------------------------------------------------------

    @server.tool()
    async def import_tree(
        file: str,
        source: str,
        format: str | None = None,
        parent: str | None = None,
        create: bool = False,
    ) -> Answer:
        """Bring another tool's tree (OpenLoom, pyloom, Loomsidian, basemode, MiniLoom,
        JSONL, text…; detected) from `source` into `file`, under `parent` (default: as new
        roots). create=true makes `file` a new document holding the import. As
        `loom import --json`: `format`, `document`, `node_count` imported, `roots` (ids of
        the imported trees' tops), `notes` (what the format could not carry)."""
        from loom import formats
        from loom.formats.forest import graft

        path, origin = document(file), roots.resolve(source)
        if create and parent:
            raise UsageError("parent cannot be combined with create (a new document has no nodes)")

        def run() -> Answer:
            forest = formats.read(origin, format=format)
            if create:
                doc = Document.new()
                tops = graft(doc, forest, header=True)
                store.create(path, doc)
            else:
                with store.editing(path) as doc:
                    tops = graft(doc, forest, doc.resolve(parent).id if parent else None)
            return payloads.answer(
                "import", **payloads.imported(forest, source, doc, path, tops, current=False)
            )

        return await call(run)

    @server.tool()
    async def export(
        file: str,
        format: str,
        out: str | None = None,
        node: str | None = None,
        force: bool = False,
        fields: str | None = None,
    ) -> Answer:
        """Write the document in another format: openloom, pyloom, loomsidian, basemode,
        jsonl, loom, text, markdown, transcript, html. With `out` (a path) the file is
        written there (never over the document itself; over another loom document only
        with force=true); without, the content is returned. `node`: the branch end (text,
        markdown; default the cursor) or the subtree root (tree formats; default the
        whole forest). As `loom export --json`: `format`, `scope`, `node`, `bytes`,
        `notes` (what the format cannot carry), and `content` or `output` (the path)."""
        from loom import files, formats

        chosen = chosen_fields(fields)
        path = document(file)
        target = (
            formats.export_target(
                str(roots.resolve(out)), path, force=force, hint="give force=true to replace it"
            )
            if out
            else None
        )

        def run() -> Answer:
            doc = store.load(path)
            at = doc.resolve(node).id if node else None
            data = formats.export(doc, format, at)
            notes = formats.export_notes(doc, format, at)
            done = {
                **payloads.exported(doc, format, at, len(data), notes, chosen),
                "cursor": doc.cursor_id,
            }
            if target is not None:
                files.write_atomic(target, data)
                return payloads.answer("export", **done, output=str(target))
            if len(data) > MAX_EXPORT_CHARS:
                raise UsageError(
                    f"the export is {len(data)} bytes: give `out` to write it to a file"
                )
            return payloads.answer("export", **done, content=data.decode("utf-8", "replace"))

        return await call(run)

    # ---- resources --------------------------------------------------------------------------

    def resource(fn: Callable[[], Answer]) -> str:
        try:
            return json.dumps(fn(), ensure_ascii=False)
        except LoomError as exc:
            raise ResourceError(exc.message) from None

    @server.resource("loom://documents", mime_type="application/json")
    def documents() -> str:
        """The loom documents (*.loom.json) under the server's root directories."""
        found = [roots.relative(p) for p in roots.documents()]
        return json.dumps({"documents": found})

    @server.resource("loom://document/{+file}", mime_type="application/json")
    def document_resource(file: str) -> str:
        """A document, as `loom info --json`: the document, its counts and the cursor."""

        def run() -> Answer:
            path = document(file)
            doc = store.load(path)
            return payloads.answer(
                "info",
                document=payloads.document(doc, path),
                stats=payloads.stats(doc),
                cursor=doc.cursor_id,
            )

        return resource(run)

    @server.resource("loom://node/{node}/{+file}", mime_type="application/json")
    def node_resource(node: str, file: str) -> str:
        """One node object of a document: every field, its full text included."""
        every = Fields((*payloads.ALL.names, "full_text"))

        def run() -> Answer:
            return payloads.node(store.load(document(file)).resolve(node), every)

        return resource(run)

    return server
