"""OpenLoom v1 (`*.openloom.json`): a chat tree, one root, nodes keyed by UUID.

OpenLoom nodes are whole chat turns, not text segments. They stay nodes of kind
user / assistant / system with their text as it is: loom's full text of an
imported node is then the turns joined without separators, while the roles (and
so a chat rendering) are kept exactly. Dates are Apple-epoch seconds (since
2001-01-01). OpenLoom has no read state, so every imported turn counts as read.
"""

from __future__ import annotations

from typing import Any

from loom.document import Document
from loom.formats import extras
from loom.formats.forest import ImportedForest, ImportedNode, link, short
from loom.formats.readers import Reader, epoch_seconds, rest, to_iso
from loom.formats.selection import (
    document_import,
    dumps,
    export_id,
    export_ids,
    import_fields,
    model_of,
    one_tree,
)

FORMAT = "openloom"
_R = Reader(FORMAT)
_NODE_KEYS = (
    "id",
    "text",
    "author",
    "modelId",
    "createdTime",
    "parentId",
    "childrenIds",
    "rememberedChildId",
    "isBookmarked",
    "bookmarkTitle",
)
_DOC_KEYS = (
    "title",
    "description",
    "systemMessage",
    "rootNodeId",
    "currentNodeId",
    "nodes",
    "bookmarkedNodes",
)
_ROLES = {"user": "user", "assistant": "assistant", "system": "system"}
# A user turn's modelId in real files; written back for users that have none.
_USER_MODEL_ID = "User"
# What loom keeps that OpenLoom has no field for: carried in each node's "loom" field.
CARRIED = ("tags", "note", "logprobs", "gen", "history")
_HOLDER = "an OpenLoom file"


def sniff(data: Any) -> bool:
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict):
        return False
    if "rootNodeId" in data or "currentNodeId" in data:
        return True
    first = next(iter(data["nodes"].values()), None)
    return isinstance(first, dict) and "childrenIds" in first and "author" in first


def parse(data: Any, *, name: str = "") -> ImportedForest:
    top = _R.obj(data, "the file")
    raw_nodes = _R.obj(top.get("nodes"), '"nodes"')
    forest = ImportedForest(FORMAT, source=name)
    ids: list[str] = []
    parents: dict[str, str | None] = {}
    children: dict[str, list[str]] = {}
    for key, value in raw_nodes.items():
        where = f"node {short(key)}"
        rec = _R.obj(value, where)
        node_id = _R.opt_ident(rec, "id", where) or key
        if node_id != key:
            raise _R.fail(f'{where} has "id" {short(node_id)}, which differs from its key')
        ids.append(key)
        parents[key] = _R.opt_ident(rec, "parentId", where)
        children[key] = _R.idents(rec, "childrenIds", where)
        forest.nodes[key] = _node(key, rec, where)
    root = _R.opt_ident(top, "rootNodeId", "the file")
    if root is not None and root not in raw_nodes:
        raise _R.fail(f"rootNodeId {short(root)} is not among the nodes")
    kids, roots = link(
        FORMAT,
        ids,
        parents=parents,
        children=children,
        parent_field="parentId",
        first_roots=[root] if root else (),
    )
    for node_id, node in forest.nodes.items():
        node.children = kids[node_id]
        if node.last_child is not None and node.last_child not in node.children:
            forest.notes.append(
                f"node {short(node_id)}: rememberedChildId is not one of its children; ignored"
            )
            node.last_child = None
    forest.roots = roots
    if root is not None and len(roots) > 1:
        forest.notes.append(
            f"{len(roots) - 1} parentless node(s) besides rootNodeId were imported as extra roots"
        )
    _bookmarked_copies(top, forest)
    current = _R.opt_ident(top, "currentNodeId", "the file")
    if current is not None and current not in forest.nodes:
        forest.notes.append(
            f"currentNodeId {short(current)} is not among the nodes; the cursor starts at the root"
        )
        current = None
    forest.cursor = current
    forest.title = _R.text(top, "title", "the file")
    forest.description = _R.text(top, "description", "the file")
    forest.system = _R.text(top, "systemMessage", "the file") or None
    fields = rest(top, _DOC_KEYS)
    if "lastModified" in fields:
        fields["lastModified"] = (
            to_iso(fields["lastModified"], epoch="apple") or fields["lastModified"]
        )
    forest.fields = fields
    return forest


def _node(node_id: str, rec: dict[str, Any], where: str) -> ImportedNode:
    author = _R.text(rec, "author", where, "user")
    kind = _ROLES.get(author, "human")
    fields = rest(rec, _NODE_KEYS)
    if author not in _ROLES:
        fields["author"] = author
    node = ImportedNode(node_id, text=_R.text(rec, "text", where), kind=kind, visited=True)
    model = _R.opt_text(rec, "modelId", where)
    if model is not None:
        if kind == "user":
            fields["modelId"] = model  # a user turn's "model" is a label, not a generator
        else:
            node.meta["gen"] = {"model": model}
    created = rec.get("createdTime")
    if created is not None:
        node.created = to_iso(created, epoch="apple")
        if node.created is None:
            fields["createdTime"] = created
    node.last_child = _R.opt_ident(rec, "rememberedChildId", where)
    if _R.flag(rec, "isBookmarked", where):
        title = _R.text(rec, "bookmarkTitle", where)
        node.bookmark = {"title": title} if title else {}
    elif rec.get("bookmarkTitle"):
        fields["bookmarkTitle"] = rec["bookmarkTitle"]
    if extras.FIELD in fields:
        skipped = extras.restore(node, fields.pop(extras.FIELD))
        if skipped:
            fields[extras.FIELD] = rec[extras.FIELD]  # kept as it was, for a later look
    node.fields = fields
    return node


def _bookmarked_copies(top: dict[str, Any], forest: ImportedForest) -> None:
    """`bookmarkedNodes` repeats bookmarked nodes; a node listed only there still counts."""
    copies = top.get("bookmarkedNodes")
    if copies is None:
        return
    for key, value in _R.obj(copies, '"bookmarkedNodes"').items():
        node = forest.nodes.get(key)
        if node is None:
            forest.notes.append(
                f"bookmarkedNodes lists {short(key)}, which is not among the nodes; ignored"
            )
            continue
        if node.bookmark is None:
            title = value.get("bookmarkTitle") if isinstance(value, dict) else None
            node.bookmark = {"title": title} if isinstance(title, str) and title else {}


# ---- export -----------------------------------------------------------------------------------


def _author(kind: str) -> str:
    if kind in _ROLES:
        return kind
    return "assistant" if kind == "model" else "user"


def export(doc: Document, node: str | None = None) -> bytes:
    """The tree as an OpenLoom file (the subtree at NODE with its ancestors, or the one tree)."""
    selection = one_tree(doc, node, _HOLDER)
    nodes = doc.nodes
    out_id = export_ids(doc, selection, FORMAT, fresh=lambda u: str(u).upper())  # OpenLoom's style
    parents = selection.parent_map()
    fallback_time = epoch_seconds(doc.data.get("created"), epoch="apple") or 0.0
    out_nodes: dict[str, dict[str, Any]] = {}
    bookmarked: dict[str, dict[str, Any]] = {}
    for node_id in selection.order:
        rec = nodes[node_id]
        kind = str(rec.get("kind", "human"))
        author = _author(kind)
        fields = import_fields(doc, node_id, FORMAT)
        entry: dict[str, Any] = {
            k: v for k, v in fields.items() if k not in _NODE_KEYS and k != "author"
        }
        entry["id"] = out_id[node_id]
        entry["text"] = rec.get("text", "")
        # A role OpenLoom does not know (kept from the import) goes back as it was.
        entry["author"] = (
            fields["author"]
            if kind == "human" and isinstance(fields.get("author"), str)
            else author
        )
        if author == "user":
            entry["modelId"] = fields.get("modelId") or _USER_MODEL_ID
        else:
            entry["modelId"] = model_of(doc, node_id) or fields.get("modelId") or "unknown"
        created = epoch_seconds(rec.get("created"), epoch="apple")
        if created is None and isinstance(fields.get("createdTime"), int | float):
            created = fields["createdTime"]
        # OpenLoom reads every node's date; one without a known time gets the document's.
        entry["createdTime"] = created if created is not None else fallback_time
        parent = parents.get(node_id)
        if parent is not None:
            entry["parentId"] = out_id[parent]
        kids = selection.children.get(node_id, [])
        entry["childrenIds"] = [out_id[k] for k in kids]
        last = rec.get("last_child")
        if last in kids:
            entry["rememberedChildId"] = out_id[last]
        mark = rec.get("bookmark")
        entry["isBookmarked"] = mark is not None
        if isinstance(mark, dict) and mark.get("title"):
            entry["bookmarkTitle"] = str(mark["title"])
        carried = extras.carry(doc, node_id, CARRIED)
        if carried:
            entry[extras.FIELD] = carried
        out_nodes[entry["id"]] = entry
        if mark is not None:
            bookmarked[entry["id"]] = dict(entry)
    root = selection.roots[0]
    cursor = doc.cursor_id if doc.cursor_id in out_id else root
    header = document_import(doc, FORMAT, root)
    data: dict[str, Any] = {
        k: v for k, v in header.items() if k not in _DOC_KEYS and k not in ("id", "lastModified")
    }
    data["id"] = (
        header.get("id") if isinstance(header.get("id"), str) else str(export_id(doc, "")).upper()
    )
    data["title"] = doc.title
    data["description"] = doc.description
    data["systemMessage"] = doc.system or ""
    modified = epoch_seconds(doc.data.get("modified"), epoch="apple")
    if modified is not None:
        data["lastModified"] = modified
    data["rootNodeId"] = out_id[root]
    data["currentNodeId"] = out_id[cursor]
    data["nodes"] = out_nodes
    data["bookmarkedNodes"] = bookmarked
    return dumps(data)


def losses(doc: Document, node: str | None = None) -> list[str]:
    """What `export` leaves out or carries only in the "loom" field, as notes with counts."""
    return extras.losses(doc, one_tree(doc, node, _HOLDER), node, _HOLDER, CARRIED)
