"""Loom's own formats as import/export targets: a whole document, and JSONL of nodes.

Importing a loom document grafts its forest into another document (fresh ids,
references between its nodes re-pointed). JSONL holds one node per line: the
node's record from docs/schema.md with its `id` first; it carries no document
header, so the cursor and title do not travel with it.
"""

from __future__ import annotations

from typing import Any

import orjson

from loom import store
from loom.document import FORMAT as LOOM_FORMAT
from loom.document import KINDS, Document
from loom.errors import DocumentError
from loom.formats.forest import ImportedForest, ImportedNode, link, short
from loom.formats.readers import Reader, to_iso
from loom.formats.selection import dumps, exported_record, select

FORMAT = "loom"
LINES = "jsonl"
_R = Reader(LINES)
_KNOWN = frozenset(
    (
        "text",
        "kind",
        "created",
        "modified",
        "tags",
        "bookmark",
        "note",
        "visited",
        "last_child",
        "archived",
        "history",
        "meta",
        "parent",
        "children",
    )
)


def sniff(data: Any) -> bool:
    return isinstance(data, dict) and data.get("format") == LOOM_FORMAT


def sniff_lines(records: list[Any]) -> bool:
    return all(
        isinstance(r, dict)
        and "id" in r
        and "parent_id" not in r
        and "parentId" not in r
        and ("text" in r or "parent" in r)
        for r in records
    )


# ---- reading -------------------------------------------------------------------------------


def parse_document(raw: bytes, *, name: str = "") -> ImportedForest:
    """Another loom document (validated and migrated as `loom` itself reads it)."""
    try:
        data = store.parse(raw, name or "<document>")
    except (TypeError, ValueError, AttributeError) as exc:
        # store.validate assumes ids are strings; other values are damage too.
        raise DocumentError(f"{name}: damaged loom document ({exc})") from None
    doc = Document(data)
    forest = ImportedForest(FORMAT, source=name, native=True)
    for node_id in doc.walk(include_archived=True):
        forest.nodes[node_id] = _from_record(node_id, doc.nodes[node_id])
        forest.nodes[node_id].children = list(doc.nodes[node_id].get("children", ()))
    forest.roots = list(doc.root_ids)
    forest.cursor = doc.cursor_id
    forest.title = doc.title
    forest.description = doc.description
    forest.system = doc.system
    return forest


def parse_lines(records: list[Any], *, name: str = "") -> ImportedForest:
    forest = ImportedForest(LINES, source=name, native=True)
    ids: list[str] = []
    parents: dict[str, str | None] = {}
    children: dict[str, list[str]] = {}
    for i, value in enumerate(records, 1):
        rec = _R.obj(value, f"line {i}")
        node_id = _R.ident(rec.get("id"), f'the "id" on line {i}')
        where = f"node {short(node_id)}"
        ids.append(node_id)
        parents[node_id] = _R.opt_ident(rec, "parent", where)
        children[node_id] = _R.idents(rec, "children", where)
        record = {k: v for k, v in rec.items() if k not in ("id", "parent", "children")}
        _check_record(record, where)
        forest.nodes[node_id] = _from_record(node_id, record)
    kids, roots = link(LINES, ids, parents=parents, children=children, parent_field="parent")
    for node_id, node in forest.nodes.items():
        node.children = kids[node_id]
    forest.roots = roots
    return forest


def _check_record(rec: dict[str, Any], where: str) -> None:
    _R.text(rec, "text", where)
    kind = rec.get("kind", "human")
    if kind not in KINDS:
        raise _R.fail(f"{where} has an unknown kind {kind!r}")
    _R.text(rec, "note", where)
    for key in ("tags", "history"):
        if key in rec:
            _R.arr(rec[key], f'the "{key}" of {where}')
    for key in ("meta", "bookmark"):
        if key in rec:
            _R.obj(rec[key], f'the "{key}" of {where}')


def _from_record(node_id: str, rec: dict[str, Any]) -> ImportedNode:
    node = ImportedNode(node_id, text=str(rec.get("text", "")), kind=str(rec.get("kind", "human")))
    node.created = to_iso(rec.get("created")) if rec.get("created") else None
    node.modified = to_iso(rec.get("modified")) if rec.get("modified") else None
    node.tags = [str(t) for t in rec.get("tags", ()) if isinstance(t, str)]
    mark = rec.get("bookmark")
    node.bookmark = dict(mark) if isinstance(mark, dict) else None
    node.note = str(rec.get("note") or "")
    node.visited = bool(rec.get("visited"))
    last = rec.get("last_child")
    node.last_child = last if isinstance(last, str) else None
    node.archived = bool(rec.get("archived"))
    node.history = [dict(h) for h in rec.get("history", ()) if isinstance(h, dict)]
    meta = rec.get("meta")
    node.meta = dict(meta) if isinstance(meta, dict) else {}
    # Keys this loom does not know (written by a newer one) ride along unchanged.
    node.extra = {k: v for k, v in rec.items() if k not in _KNOWN}
    return node


# ---- writing -------------------------------------------------------------------------------


def export_lines(doc: Document, node: str | None = None) -> bytes:
    """One node per line: `{"id": …, **record}` with parent and children limited to the export."""
    selection = select(doc, node, archived=True)
    parents = selection.parent_map()
    lines: list[bytes] = []
    for node_id in selection.order:
        rec = exported_record(doc, node_id)
        rec.pop("parent", None)
        rec.pop("children", None)
        line: dict[str, Any] = {"id": node_id}
        if parents.get(node_id) is not None:
            line["parent"] = parents[node_id]
        kids = selection.children.get(node_id, [])
        if kids:
            line["children"] = kids
        line.update(rec)
        lines.append(orjson.dumps(line))
    return b"\n".join(lines) + (b"\n" if lines else b"")


def export_document(doc: Document, node: str | None = None) -> bytes:
    """A standalone loom document of the selection (the journal is not carried over)."""
    selection = select(doc, node, archived=True)
    out = Document.new(title=doc.title, description=doc.description, system=doc.system)
    if doc.defaults:
        out.data["defaults"] = doc.defaults
    parents = selection.parent_map()
    for node_id in selection.order:
        rec = {
            k: v
            for k, v in exported_record(doc, node_id).items()
            if k not in ("parent", "children", "last_child")
        }
        if parents.get(node_id) is not None:
            rec["parent"] = parents[node_id]
        kids = selection.children.get(node_id, [])
        if kids:
            rec["children"] = kids
            last = doc.nodes[node_id].get("last_child")
            if last in kids:
                rec["last_child"] = last
        out.nodes[node_id] = rec
    out.data["roots"] = list(selection.roots)
    cursor = doc.cursor_id if doc.cursor_id in out.nodes else None
    if cursor is None:
        cursor = next((r for r in selection.roots if not out.nodes[r].get("archived")), None)
    if cursor is not None:
        out.data["cursor"] = cursor
    try:
        store.validate(out.data, "export")
    except DocumentError as exc:  # pragma: no cover - select() only yields consistent trees
        raise DocumentError(f"cannot export: {exc.message}") from None
    return dumps(out.data)
