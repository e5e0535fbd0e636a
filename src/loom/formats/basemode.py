"""basemode-loom: its JSON export, and its SQLite store read directly (read-only).

Nodes hold text segments (a root's starting text, then each continuation). Roots
carry their tree's settings; `context` rows (text sent before a tree's root) are
not tree nodes, so their text is kept on the root in meta.import.fields. A hidden
branch becomes an archived (deleted, recoverable) node; the checked-out child
becomes the remembered child. basemode has no read state: all nodes count as read.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from loom.document import KINDS, Document
from loom.errors import DocumentError
from loom.formats.forest import ImportedForest, ImportedNode, link, short
from loom.formats.readers import Reader, rest, tags_from, to_iso
from loom.formats.selection import (
    document_import,
    dumps,
    export_ids,
    gen_of,
    import_fields,
    model_of,
    select,
)

FORMAT = "basemode"
_R = Reader(FORMAT)
_NODE_KEYS = (
    "id",
    "parent_id",
    "root_id",
    "tree_id",
    "text",
    "model",
    "strategy",
    "max_tokens",
    "temperature",
    "created_at",
    "metadata",
    "metadata_json",
    "checked_out",
    "context_id",
)
_META_MAPPED = ("bookmarked", "hidden", "generation_id", "bookmark_title", "tags", "note", "role")
_ROLES = ("user", "assistant", "system")
# Metadata key for a loom node kind the basemode fields cannot express (a model node
# with no model name, an imported text), so a round trip keeps it.
LOOM_KIND = "loom_kind"
BOOKMARK_TITLE = "bookmark_title"  # likewise a bookmark's title, tags and note


def sniff(data: Any) -> bool:
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        return False
    first = next((n for n in data["nodes"] if isinstance(n, dict)), None)
    if first is None:
        return data.get("version") is not None and "edges" not in data
    return "parent_id" in first and ("root_id" in first or "tree_id" in first)


def parse(data: Any, *, name: str = "") -> ImportedForest:
    top = _R.obj(data, "the file")
    records = [
        _R.obj(r, f"node {i + 1}") for i, r in enumerate(_R.arr(top.get("nodes"), '"nodes"'))
    ]
    trees = [
        _R.obj(t, f"tree {i + 1}") for i, t in enumerate(_R.arr(top.get("trees") or [], '"trees"'))
    ]
    forest = _build(records, trees, name)
    version = top.get("version")
    if version not in (None, 1):
        forest.notes.append(
            f"export version {version!r} is newer than the one loom knows (1); read as version 1"
        )
    forest.fields = rest(top, ("nodes", "trees"))
    return forest


def read_sqlite(path: Path) -> ImportedForest:
    """Read a basemode SQLite store without writing to it (no journal, no WAL checkpoint)."""
    import sqlite3  # only for SQLite stores

    uri = "file:" + quote(str(path.resolve())) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        raise DocumentError(f"{path}: cannot open the SQLite store: {exc}") from None
    try:
        conn.row_factory = sqlite3.Row
        tables = {
            str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if "nodes" not in tables:
            raise DocumentError(
                f'{path}: an SQLite database, but not a basemode store (it has no "nodes" table)'
            )
        columns = {str(r[1]) for r in conn.execute("PRAGMA table_info(nodes)")}
        missing = {"id", "text", "parent_id"} - columns
        if missing:
            raise DocumentError(
                f'{path}: the "nodes" table has no {", ".join(sorted(missing))} column: not a basemode store'
            )
        rows = [dict(r) for r in conn.execute("SELECT * FROM nodes ORDER BY rowid")]
        trees = (
            [dict(r) for r in conn.execute("SELECT * FROM trees ORDER BY rowid")]
            if "trees" in tables
            else []
        )
    except sqlite3.Error as exc:
        raise DocumentError(f"{path}: cannot read the SQLite store: {exc}") from None
    except UnicodeDecodeError:
        raise DocumentError(
            f"{path}: the SQLite store holds text that is not UTF-8 (is it damaged?)"
        ) from None
    finally:
        conn.close()
    for row in rows:
        row["metadata"] = _json_column(
            row.pop("metadata_json", None), f"node {short(row.get('id'))}", path
        )
    for tree in trees:
        tree["metadata"] = _json_column(
            tree.pop("metadata_json", None), f"tree {short(tree.get('id'))}", path
        )
        if "model_plan_json" in tree:
            tree["model_plan"] = _json_column(
                tree.pop("model_plan_json"), f"tree {short(tree.get('id'))}", path, default=[]
            )
    return _build(rows, trees, str(path))


def _json_column(value: Any, where: str, path: Path, default: Any = None) -> Any:
    if value is None:
        return {} if default is None else default
    if not isinstance(value, str | bytes):
        raise DocumentError(f"{path}: {where} has JSON metadata of type {type(value).__name__}")
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        raise DocumentError(f"{path}: {where} has metadata that is not valid JSON") from None


def _build(records: list[dict[str, Any]], trees: list[dict[str, Any]], name: str) -> ImportedForest:
    forest = ImportedForest(FORMAT, source=name)
    contexts: dict[str, str] = {}
    rows: list[tuple[str, dict[str, Any]]] = []
    for i, rec in enumerate(records):
        node_id = _R.ident(rec.get("id"), f'the "id" of node {i + 1}')
        if rec.get("kind") == "context":
            contexts[node_id] = _R.text(rec, "text", f"context {short(node_id)}")
            continue
        rows.append((node_id, rec))
    rows.sort(key=lambda item: _order_key(item[0], item[1]))
    ids = [node_id for node_id, _ in rows]
    parents: dict[str, str | None] = {}
    checked: dict[str, str] = {}
    context_of: dict[str, str | None] = {}
    for node_id, rec in rows:
        where = f"node {short(node_id)}"
        parent = _R.opt_ident(rec, "parent_id", where)
        if parent in contexts:
            raise _R.fail(f"{where} has a context node as its parent_id")
        parents[node_id] = parent
        if parent is not None and _R.flag(rec, "checked_out", where):
            checked[parent] = node_id
        context_of[node_id] = _R.opt_ident(rec, "context_id", where)
        forest.nodes[node_id] = _node(node_id, rec, where)
    kids, roots = link(FORMAT, ids, parents=parents, parent_field="parent_id")
    for node_id, node in forest.nodes.items():
        node.children = kids[node_id]
        node.last_child = checked.get(node_id)
        context = context_of[node_id]
        if context is not None and context != context_of.get(parents[node_id] or ""):
            if context in contexts:
                node.fields["context"] = contexts[context]
            node.fields["context_id"] = context
    forest.roots = roots
    _trees(trees, forest)
    if len(forest.roots) == 1 and not forest.title:
        tree = forest.nodes[forest.roots[0]].fields.get("tree")
        if isinstance(tree, dict) and isinstance(tree.get("name"), str):
            forest.title = tree["name"]
    return forest


def _order_key(node_id: str, rec: dict[str, Any]) -> tuple[float, str, str]:
    index = rec.get("branch_index")
    position = (
        float(index)
        if isinstance(index, int | float) and not isinstance(index, bool) and math.isfinite(index)
        else math.inf
    )
    created = rec.get("created_at")
    return (position, created if isinstance(created, str) else "", node_id)


def _node(node_id: str, rec: dict[str, Any], where: str) -> ImportedNode:
    node = ImportedNode(node_id, text=_R.text(rec, "text", where), visited=True)
    metadata = _R.obj(rec.get("metadata") or {}, f'the "metadata" of {where}')
    # Null columns and metadata say nothing; the export writes them back anyway.
    fields = {k: v for k, v in rest(rec, _NODE_KEYS).items() if v is not None}
    role = metadata.get("role")
    loom_kind = metadata.get(LOOM_KIND)
    other = {
        k: v
        for k, v in rest(metadata, _META_MAPPED if role in _ROLES else _META_MAPPED[:-1]).items()
        if v is not None
    }
    if loom_kind in KINDS:
        other.pop(LOOM_KIND)
    if other:
        fields["metadata"] = other
    model = _R.opt_text(rec, "model", where)
    if loom_kind in KINDS:
        node.kind = str(loom_kind)
    elif role in _ROLES:
        node.kind = str(role)
    elif model:
        node.kind = "model"
    gen: dict[str, Any] = {}
    if model:
        gen["model"] = model
    strategy = _R.opt_text(rec, "strategy", where)
    if strategy:
        gen["strategy"] = strategy
    params = {
        k: v for k in ("max_tokens", "temperature") if (v := _R.number(rec, k, where)) is not None
    }
    count = params.get("max_tokens")
    if count is not None and count.is_integer() and abs(count) < 2**53:
        params["max_tokens"] = int(count)
    if params:
        gen["params"] = params
    if metadata.get("generation_id") is not None:
        gen["request"] = {"id": str(metadata["generation_id"])}
    if gen:
        node.meta["gen"] = gen
    created = rec.get("created_at")
    if created is not None:
        node.created = to_iso(created)
        if node.created is None:
            fields["created_at"] = created
    if _R.flag(metadata, "bookmarked", f'the "metadata" of {where}'):
        title = metadata.get(BOOKMARK_TITLE)
        node.bookmark = {"title": title} if isinstance(title, str) and title else {}
    node.archived = _R.flag(metadata, "hidden", f'the "metadata" of {where}')
    tags = metadata.get("tags")
    if isinstance(tags, list):
        node.tags, _ = tags_from(t for t in tags if isinstance(t, str))
    node.note = _R.text(metadata, "note", f'the "metadata" of {where}')
    node.fields = fields
    return node


def _trees(trees: list[dict[str, Any]], forest: ImportedForest) -> None:
    """Tree rows: settings onto their root, the most recently used current node as the cursor."""
    latest = ""
    for i, tree in enumerate(trees):
        tree_id = _R.ident(tree.get("id"), f'the "id" of tree {i + 1}')
        root = forest.nodes.get(tree_id)
        if root is None or tree_id not in forest.roots:
            forest.notes.append(
                f"tree {short(tree_id)} has no root node; its settings were not imported"
            )
            continue
        root.fields["tree"] = {k: v for k, v in tree.items() if k != "id"}
        if _R.flag(tree, "archived", f"tree {short(tree_id)}"):
            root.archived = True
        current = _R.opt_ident(tree, "current_node_id", f"tree {short(tree_id)}")
        stamp = tree.get("updated_at")
        updated = stamp if isinstance(stamp, str) else ""
        if (
            current is not None
            and current in forest.nodes
            and (forest.cursor is None or updated > latest)
        ):
            forest.cursor, latest = current, updated


# ---- export ----------------------------------------------------------------------------------


def _number(value: Any) -> float | int | None:
    """A column value basemode can hold: a finite number, else NULL."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def export(doc: Document, node: str | None = None) -> bytes:
    """basemode's JSON export of the forest (or NODE's subtree with its ancestors)."""
    selection = select(doc, node, archived=True)
    out_id = export_ids(doc, selection, FORMAT, fresh=lambda u: u.hex)
    place = {r: i for i, r in enumerate(selection.roots)}
    for kids in selection.children.values():
        place.update((kid, i) for i, kid in enumerate(kids))
    parents = selection.parent_map()
    root_of: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for node_id in selection.order:
        rec = doc.nodes[node_id]
        parent = parents.get(node_id)
        root_of[node_id] = node_id if parent is None else root_of[parent]
        fields = import_fields(doc, node_id, FORMAT)
        gen = gen_of(doc, node_id)
        raw_params = gen.get("params")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
        kept = fields.get("metadata")
        metadata: dict[str, Any] = dict(kept) if isinstance(kept, dict) else {}
        metadata["bookmarked"] = "bookmark" in rec
        if rec.get("tags"):
            metadata["tags"] = list(rec["tags"])
        if rec.get("note"):
            metadata["note"] = rec["note"]
        mark = rec.get("bookmark")
        if isinstance(mark, dict) and mark.get("title"):
            metadata[BOOKMARK_TITLE] = str(mark["title"])
        metadata["hidden"] = bool(rec.get("archived"))
        metadata.setdefault("rating", None)
        request = gen.get("request")
        generation = request.get("id") if isinstance(request, dict) else None
        metadata["generation_id"] = generation if isinstance(generation, str) else None
        kind = rec.get("kind", "human")
        if kind in _ROLES:
            metadata["role"] = kind
        elif kind != ("model" if model_of(doc, node_id) else "human"):
            metadata[LOOM_KIND] = kind  # not implied by the model field: say it
        entry: dict[str, Any] = {
            "id": out_id[node_id],
            "parent_id": out_id[parent] if parent is not None else None,
            "root_id": out_id[root_of[node_id]],
            "text": rec.get("text", ""),
            "model": model_of(doc, node_id),
            "strategy": gen.get("strategy") if isinstance(gen.get("strategy"), str) else None,
            "max_tokens": _number(params.get("max_tokens")),
            "temperature": _number(params.get("temperature")),
            "branch_index": place[node_id],
            "created_at": rec.get("created") or doc.data.get("created"),
            "metadata": metadata,
        }
        out.append(entry)
    data: dict[str, Any] = {}
    if selection.roots:
        data.update(
            {
                k: v
                for k, v in document_import(doc, FORMAT, selection.roots[0]).items()
                if k not in ("nodes", "trees")
            }
        )
    data["version"] = 1
    data["nodes"] = out
    return dumps(data)
