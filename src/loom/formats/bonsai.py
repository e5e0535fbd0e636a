"""Bonsai: a list of nodes with `childrenIds` and `parentIds`, plus typed `edges`.

Bonsai allows a node several parents; loom is a tree, so a node sits under its
first parent and the others stay in meta.import.fields (`parentIds`), with the
edges kept whole on the document. Nodes with generation settings or logprobs are
model output; `pathNodes` (root to focus) becomes the remembered path.
"""

from __future__ import annotations

import itertools
from typing import Any

from loom.formats.forest import ImportedForest, ImportedNode, link, short
from loom.formats.readers import Reader, rest, tags_from, to_iso
from loom.formats.tokens import fit, logprobs_from_openai

FORMAT = "bonsai"
_R = Reader(FORMAT)
_NODE_KEYS = (
    "id",
    "text",
    "childrenIds",
    "parentIds",
    "tags",
    "createdAt",
    "lastVisited",
    "logprobs",
    "generationSettings",
)
_TREE_RELATIONS = (None, "child", "parent", "continuation", "branch")


def sniff(data: Any) -> bool:
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        return False
    if "edges" in data or "focusedId" in data or "pathNodes" in data:
        return True
    first = next((n for n in data["nodes"] if isinstance(n, dict)), None)
    return isinstance(first, dict) and ("childrenIds" in first or "parentIds" in first)


def parse(data: Any, *, name: str = "") -> ImportedForest:
    top = _R.obj(data, "the file")
    forest = ImportedForest(FORMAT, source=name)
    ids: list[str] = []
    listed: dict[str, list[str]] = {}
    declared: dict[str, list[str]] = {}
    for i, value in enumerate(_R.arr(top.get("nodes"), '"nodes"')):
        rec = _R.obj(value, f"node {i + 1}")
        node_id = _R.ident(rec.get("id"), f'the "id" of node {i + 1}')
        where = f"node {short(node_id)}"
        if node_id in forest.nodes:
            raise _R.fail(f"node id {short(node_id)} is used by two nodes")
        ids.append(node_id)
        listed[node_id] = _R.idents(rec, "childrenIds", where)
        declared[node_id] = _R.idents(rec, "parentIds", where)
        forest.nodes[node_id] = _node(node_id, rec, where)
    edges = [
        _R.obj(e, f"edge {i + 1}") for i, e in enumerate(_R.arr(top.get("edges") or [], '"edges"'))
    ]
    parents = _primary_parents(ids, listed, declared, edges, forest)
    children = {p: [c for c in kids if parents.get(c) == p] for p, kids in listed.items()}
    kids, roots = link(FORMAT, ids, parents=parents, children=children, parent_field="parentIds")
    for node_id, node in forest.nodes.items():
        node.children = kids[node_id]
    forest.roots = roots
    path = [p for p in _R.idents(top, "pathNodes", "the file") if p in forest.nodes]
    for upper, lower in itertools.pairwise(path):
        if lower in forest.nodes[upper].children:
            forest.nodes[upper].last_child = lower
    focused = _R.opt_ident(top, "focusedId", "the file")
    if focused is not None and focused not in forest.nodes:
        forest.notes.append(
            f"focusedId {short(focused)} does not exist; the cursor starts at the first root"
        )
        focused = None
    forest.cursor = focused or (path[-1] if path else None)
    forest.title = _R.text(top, "name", "the file")
    forest.fields = rest(top, ("nodes", "name", "pathNodes", "focusedId"))
    return forest


def _primary_parents(
    ids: list[str],
    listed: dict[str, list[str]],
    declared: dict[str, list[str]],
    edges: list[dict[str, Any]],
    forest: ImportedForest,
) -> dict[str, str | None]:
    """Each node's tree parent: its first parentIds entry, else the first node listing it, else an edge."""
    known = set(ids)
    lister: dict[str, str] = {}
    for parent in ids:
        for child in listed[parent]:
            lister.setdefault(child, parent)
    by_edge: dict[str, str] = {}
    for i, edge in enumerate(edges):
        if edge.get("relation") in _TREE_RELATIONS:
            source = _R.opt_ident(edge, "from", f"edge {i + 1}")
            target = _R.opt_ident(edge, "to", f"edge {i + 1}")
            if source in known and target in known:
                by_edge.setdefault(target, source)
    parents: dict[str, str | None] = {}
    extra = 0
    for node_id in ids:
        candidates = [p for p in declared[node_id] if p in known]
        missing = [p for p in declared[node_id] if p not in known]
        if missing:
            raise _R.fail(
                f"node {short(node_id)} has parentIds entry {short(missing[0])}, which does not exist"
            )
        parents[node_id] = (
            candidates[0] if candidates else lister.get(node_id) or by_edge.get(node_id)
        )
        if len(candidates) > 1:
            forest.nodes[node_id].fields["parentIds"] = declared[node_id]
            extra += 1
    if extra:
        forest.notes.append(
            f"{extra} node(s) have several parents; each sits under its first (the others are in meta.import.fields)"
        )
    return parents


def _node(node_id: str, rec: dict[str, Any], where: str) -> ImportedNode:
    node = ImportedNode(node_id, text=_R.text(rec, "text", where))
    fields = rest(rec, _NODE_KEYS)
    raw_tags = _R.arr(rec.get("tags") or [], f'the "tags" of {where}')
    names = [t for t in raw_tags if isinstance(t, str)]
    node.tags, changed = tags_from(names)
    if changed or len(names) != len(raw_tags):
        fields["tags"] = raw_tags
    created = rec.get("createdAt")
    if created is not None:
        node.created = to_iso(created)
        if node.created is None:
            fields["createdAt"] = created
    visited = rec.get("lastVisited")
    node.visited = visited not in (None, False, 0)
    if visited is not None:
        fields["lastVisited"] = to_iso(visited) or visited
    settings = rec.get("generationSettings")
    if isinstance(settings, dict):
        # API keys are dropped with every other secret, for the whole forest (formats.secrets).
        params = {k: v for k, v in settings.items() if k not in ("model", "provider")}
        gen: dict[str, Any] = {"params": params} if params else {}
        if isinstance(settings.get("model"), str):
            gen["model"] = settings["model"]
        if isinstance(settings.get("provider"), str):
            gen["backend"] = settings["provider"]
        node.meta["gen"] = gen
        node.kind = "model"
    elif settings is not None:
        fields["generationSettings"] = settings
    logprobs = rec.get("logprobs")
    if logprobs is not None:
        node.kind = "model"
        record = logprobs_from_openai(logprobs)
        fitted = fit(node.text, record) if record is not None else None
        if fitted is not None:
            node.meta["logprobs"] = fitted
        else:
            fields["logprobs"] = logprobs
    node.fields = fields
    return node
