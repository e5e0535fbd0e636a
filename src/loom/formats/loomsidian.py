"""Loomsidian (the Obsidian plugin): `data.json` with one tree per note, or one note's export.

Each note's tree becomes a root of its own (its note path is kept on the root in
meta.import.fields). Node text is a segment, as in loom. `settings` holds model
presets with API keys: it is never read into the document, not even in part.
"""

from __future__ import annotations

from typing import Any

from loom.document import Document
from loom.formats import extras
from loom.formats.forest import ImportedForest, ImportedNode, link, short
from loom.formats.readers import Reader, epoch_seconds, rest, to_iso
from loom.formats.selection import dumps, export_ids, import_fields, one_tree

FORMAT = "loomsidian"
_R = Reader(FORMAT)
_NODE_KEYS = ("id", "text", "value", "parentId", "unread", "bookmarked", "lastVisited", "author")
_NOTE_KEYS = ("nodes", "current")
_HUMAN_AUTHORS = ("", "user", "human", "you", "me")
# What loom keeps that a Loomsidian note has no field for: carried in each node's "loom" field.
CARRIED = ("tags", "note", "logprobs", "gen", "history", "kind", "bookmark", "created")
_HOLDER = "a Loomsidian note"


def _note_like(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("nodes"), dict | list)


def sniff(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    state = data.get("state")
    if isinstance(state, dict) and (not state or all(_note_like(v) for v in state.values())):
        return "settings" in data or bool(state)
    return _note_like(data) and ("current" in data or "hoisted" in data or "searchTerm" in data)


def parse(data: Any, *, name: str = "") -> ImportedForest:
    top = _R.obj(data, "the file")
    forest = ImportedForest(FORMAT, source=name)
    if "state" in top:
        notes = _R.obj(top["state"], '"state"')
        if "settings" in top:
            forest.notes.append("settings (model presets and API keys) were not imported")
    else:
        notes = {"": top}
    best_visit = -1.0
    for path, value in notes.items():
        note = _R.obj(value, f"note {short(path)}" if path else "the note")
        current, visit = _note(path, note, forest)
        if current is not None and (visit > best_visit or forest.cursor is None):
            forest.cursor, best_visit = current, visit
    if len(notes) == 1:
        path = next(iter(notes))
        forest.title = path.rsplit("/", 1)[-1].removesuffix(".md") if path else ""
    return forest


def _note(path: str, note: dict[str, Any], forest: ImportedForest) -> tuple[str | None, float]:
    """Add one note's tree; returns its current node and when that was last visited."""
    where_note = f"note {short(path)}" if path else "the note"
    raw = note.get("nodes")
    if isinstance(raw, list):
        entries: list[tuple[str, Any]] = []
        for i, item in enumerate(raw):
            rec = _R.obj(item, f"node {i + 1} of {where_note}")
            entries.append(
                (_R.ident(rec.get("id"), f'the "id" of node {i + 1} of {where_note}'), rec)
            )
    else:
        entries = list(_R.obj(raw, f'the "nodes" of {where_note}').items())
    ids: list[str] = []
    parents: dict[str, str | None] = {}
    local: dict[str, ImportedNode] = {}
    visits: dict[str, float] = {}
    for node_id, value in entries:
        where = f"node {short(node_id)} of {where_note}" if path else f"node {short(node_id)}"
        rec = _R.obj(value, where)
        if node_id in local:
            raise _R.fail(f"{where} appears twice")
        ids.append(node_id)
        parents[node_id] = _R.opt_ident(rec, "parentId", where)
        text = rec.get("text", rec.get("value"))
        node = ImportedNode(node_id, text=_R.text({"text": text}, "text", where))
        fields = rest(rec, _NODE_KEYS)
        if "value" in rec and "text" in rec:
            fields["value"] = rec["value"]
        node.visited = not _R.flag(rec, "unread", where)
        if _R.flag(rec, "bookmarked", where):
            node.bookmark = {}
        last = _R.number(rec, "lastVisited", where)
        if last is not None:
            visits[node_id] = last
            fields["lastVisited"] = to_iso(last) or last
        author = _R.opt_text(rec, "author", where)
        if author is not None:
            fields["author"] = author
            if author.strip().lower() not in _HUMAN_AUTHORS:
                node.kind = "model"
                node.meta["gen"] = {"model": author}
        if extras.FIELD in fields:
            skipped = extras.restore(node, fields.pop(extras.FIELD))
            if skipped:
                fields[extras.FIELD] = rec[extras.FIELD]  # kept as it was, for a later look
        node.fields = fields
        local[node_id] = node
    kids, roots = link(
        f"{FORMAT}: {where_note}" if path else FORMAT, ids, parents=parents, parent_field="parentId"
    )

    # Two notes may reuse an id: inside the forest a node's key carries its note's path.
    def key(node_id: str) -> str:
        return f"{path}\0{node_id}" if path else node_id

    for node_id, node in local.items():
        node.children = [key(k) for k in kids[node_id]]
        forest.nodes[key(node_id)] = node
    note_fields = rest(note, _NOTE_KEYS)
    for root in roots:
        local[root].fields = {
            **local[root].fields,
            **({"note_path": path} if path else {}),
            **note_fields,
        }
    forest.roots.extend(key(r) for r in roots)
    if len(roots) > 1:
        forest.notes.append(f"{where_note} has {len(roots)} parentless nodes; each became a root")
    current = _R.opt_ident(note, "current", where_note)
    if current is None:
        return None, -1.0
    if current not in local:
        forest.notes.append(f"the current node of {where_note} does not exist")
        return None, -1.0
    return key(current), visits.get(current, 0.0)


# ---- export: one note -----------------------------------------------------------------------------


def export(doc: Document, node: str | None = None) -> bytes:
    """One note's state, as Loomsidian keeps it per note (the one tree, or NODE's subtree)."""
    selection = one_tree(doc, node, _HOLDER)
    out_id = export_ids(doc, selection, FORMAT)
    kept_ids = set(out_id.values())
    parents = selection.parent_map()
    nodes: dict[str, Any] = {}
    for node_id in selection.order:
        rec = doc.nodes[node_id]
        fields = import_fields(doc, node_id, FORMAT)
        entry: dict[str, Any] = {
            k: v
            for k, v in fields.items()
            if k not in _NODE_KEYS and k not in ("note_path", "hoisted", "searchTerm")
        }
        entry["text"] = rec.get("text", "")
        parent = parents.get(node_id)
        entry["parentId"] = out_id[parent] if parent is not None else None
        entry.setdefault("collapsed", False)
        entry["unread"] = not rec.get("visited")
        entry["bookmarked"] = "bookmark" in rec
        visited = epoch_seconds(
            fields.get("lastVisited") or rec.get("modified") or rec.get("created")
        )
        if visited is not None:
            entry["lastVisited"] = int(visited * 1000)
        carried = extras.carry(doc, node_id, CARRIED)
        if carried:
            entry[extras.FIELD] = carried
        nodes[out_id[node_id]] = entry
    root = selection.roots[0]
    root_fields = import_fields(doc, root, FORMAT)
    cursor = doc.cursor_id if doc.cursor_id in out_id else root
    state: dict[str, Any] = {
        "current": out_id[cursor],
        # Hoisted ids are the note's own; they survive where the export kept the original ids.
        "hoisted": [
            h for h in root_fields.get("hoisted", []) if isinstance(h, str) and h in kept_ids
        ]
        if isinstance(root_fields.get("hoisted"), list)
        else [],
        "searchTerm": root_fields.get("searchTerm", "")
        if isinstance(root_fields.get("searchTerm"), str)
        else "",
        "nodes": nodes,
    }
    return dumps(state)


def losses(doc: Document, node: str | None = None) -> list[str]:
    """What `export` leaves out or carries only in the "loom" field, as notes with counts."""
    return extras.losses(doc, one_tree(doc, node, _HOLDER), node, _HOLDER, CARRIED)
