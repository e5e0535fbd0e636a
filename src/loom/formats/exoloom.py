"""Exoloom: `{loomType: "Exoloom", tree: {nodes: {…}}, lens: {bookmarks, prunedNodes}}`.

Node `content` is a segment; USER nodes are human, LLM nodes are model output
(`authorName` is the model). Pruned nodes become archived (deleted, recoverable).
Exoloom keeps no read state, so all nodes count as read.
"""

from __future__ import annotations

from typing import Any

from loom.formats.forest import ImportedForest, ImportedNode, link, short
from loom.formats.readers import Reader, rest, to_iso

FORMAT = "exoloom"
_R = Reader(FORMAT)
_NODE_KEYS = ("id", "content", "authorType", "authorName", "parentId", "childrenIds", "createdAt")
_TREE_KEYS = ("title", "description", "rootNodeId", "nodes")
_SCHEMA_VERSION = 1


def sniff(data: Any) -> bool:
    if not isinstance(data, dict):
        return False
    if data.get("loomType") == "Exoloom":
        return True
    tree = data.get("tree")
    return isinstance(tree, dict) and isinstance(tree.get("nodes"), dict) and "lens" in data


def parse(data: Any, *, name: str = "") -> ImportedForest:
    top = _R.obj(data, "the file")
    tree = _R.obj(top.get("tree"), '"tree"')
    raw_nodes = _R.obj(tree.get("nodes"), 'the "nodes" of "tree"')
    forest = ImportedForest(FORMAT, source=name)
    version = top.get("schemaVersion")
    if version is not None and version != _SCHEMA_VERSION:
        forest.notes.append(
            f"schemaVersion {version!r} is not the one loom knows ({_SCHEMA_VERSION}); read as {_SCHEMA_VERSION}"
        )
    ids: list[str] = []
    parents: dict[str, str | None] = {}
    children: dict[str, list[str]] = {}
    for key, value in raw_nodes.items():
        where = f"node {short(key)}"
        rec = _R.obj(value, where)
        ids.append(key)
        parents[key] = _R.opt_ident(rec, "parentId", where)
        children[key] = _R.idents(rec, "childrenIds", where)
        forest.nodes[key] = _node(key, rec, where)
    root = _R.opt_ident(tree, "rootNodeId", '"tree"')
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
    forest.roots = roots
    lens = _R.obj(top.get("lens") or {}, '"lens"')
    for kind, attribute in (("bookmarks", "bookmark"), ("prunedNodes", "archived")):
        for i, entry in enumerate(_R.arr(lens.get(kind) or [], f'the "{kind}" of "lens"')):
            ref = _R.obj(entry, f'entry {i + 1} of the "{kind}" of "lens"')
            node_id = _R.ident(
                ref.get("nodeId"), f'the "nodeId" of entry {i + 1} of the "{kind}" of "lens"'
            )
            target = forest.nodes.get(node_id)
            if target is None:
                forest.notes.append(
                    f'lens "{kind}" names node {short(node_id)}, which does not exist; ignored'
                )
            elif attribute == "bookmark":
                target.bookmark = target.bookmark or {}
            else:
                target.archived = True
    forest.title = _R.text(tree, "title", '"tree"')
    forest.description = _R.text(tree, "description", '"tree"')
    fields = rest(top, ("tree", "lens"))
    tree_rest = rest(tree, _TREE_KEYS)
    if "createdAt" in tree_rest:
        tree_rest["createdAt"] = to_iso(tree_rest["createdAt"]) or tree_rest["createdAt"]
    if tree_rest:
        fields["tree"] = tree_rest
    lens_rest = rest(lens, ("bookmarks", "prunedNodes"))
    if lens_rest:
        fields["lens"] = lens_rest
    forest.fields = fields
    return forest


def _node(node_id: str, rec: dict[str, Any], where: str) -> ImportedNode:
    node = ImportedNode(node_id, text=_R.text(rec, "content", where), visited=True)
    fields = rest(rec, _NODE_KEYS)
    author = _R.text(rec, "authorType", where)
    name = _R.opt_text(rec, "authorName", where)
    if author.upper() == "LLM":
        node.kind = "model"
        if name:
            node.meta["gen"] = {"model": name}
    else:
        if author and author.upper() != "USER":
            fields["authorType"] = author
        if name:
            fields["authorName"] = name
    created = rec.get("createdAt")
    if created is not None:
        node.created = to_iso(created)
        if node.created is None:
            fields["createdAt"] = created
    node.fields = fields
    return node
