"""nanoloom: `{tapestry: {nodes, root, metadata: {name}}, shuttle: "<current id>"}`.

A node's `data` is its segment. Generated nodes carry the OpenAI completion (and
its choice) as `metadata`: model, finish reason, usage and logprobs map to loom's
`meta.gen` and `meta.logprobs`; the rest stays in meta.import.fields.
"""

from __future__ import annotations

from typing import Any

from loom.formats.forest import ImportedForest, ImportedNode, link, short
from loom.formats.readers import Reader, rest, to_iso
from loom.formats.tokens import fit, logprobs_from_openai

FORMAT = "nanoloom"
_R = Reader(FORMAT)
_GEN_KEYS = ("model", "finish_reason", "usage")
_REQUEST_KEYS = ("id", "index")


def sniff(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("tapestry"), dict)


def parse(data: Any, *, name: str = "") -> ImportedForest:
    top = _R.obj(data, "the file")
    tapestry = _R.obj(top.get("tapestry"), '"tapestry"')
    raw = tapestry.get("nodes")
    if isinstance(raw, dict):
        entries = [(str(k), _R.obj(v, f"node {short(k)}")) for k, v in raw.items()]
    else:
        entries = []
        for i, value in enumerate(_R.arr(raw, 'the "nodes" of "tapestry"')):
            rec = _R.obj(value, f"node {i + 1}")
            entries.append((_R.ident(rec.get("id"), f'the "id" of node {i + 1}'), rec))
    forest = ImportedForest(FORMAT, source=name)
    ids: list[str] = []
    parents: dict[str, str | None] = {}
    children: dict[str, list[str]] = {}
    for node_id, rec in entries:
        where = f"node {short(node_id)}"
        if node_id in forest.nodes:
            raise _R.fail(f"node id {short(node_id)} is used by two nodes")
        ids.append(node_id)
        parents[node_id] = _R.opt_ident(rec, "parent", where)
        children[node_id] = _R.idents(rec, "children", where)
        forest.nodes[node_id] = _node(node_id, rec, where)
    root = _R.opt_ident(tapestry, "root", '"tapestry"')
    if root is not None and root not in forest.nodes:
        raise _R.fail(f"the root {short(root)} is not among the nodes")
    kids, roots = link(
        FORMAT,
        ids,
        parents=parents,
        children=children,
        parent_field="parent",
        first_roots=[root] if root else (),
    )
    for node_id, node in forest.nodes.items():
        node.children = kids[node_id]
    forest.roots = roots
    shuttle = _R.opt_ident(top, "shuttle", "the file")
    if shuttle is not None and shuttle not in forest.nodes:
        forest.notes.append(
            f"the shuttle's node {short(shuttle)} does not exist; the cursor starts at the root"
        )
        shuttle = None
    forest.cursor = shuttle
    meta = _R.obj(tapestry.get("metadata") or {}, 'the "metadata" of "tapestry"')
    forest.title = _R.text(meta, "name", 'the "metadata" of "tapestry"')
    fields = rest(top, ("tapestry", "shuttle"))
    if rest(meta, ("name",)):
        fields["metadata"] = rest(meta, ("name",))
    extra = rest(tapestry, ("nodes", "root", "metadata"))
    if extra:
        fields["tapestry"] = extra
    forest.fields = fields
    return forest


def _node(node_id: str, rec: dict[str, Any], where: str) -> ImportedNode:
    node = ImportedNode(node_id, text=_R.text(rec, "data", where), visited=True)
    fields = rest(rec, ("id", "data", "metadata", "parent", "children"))
    metadata = _R.obj(rec.get("metadata") or {}, f'the "metadata" of {where}')
    kept = dict(metadata)
    gen = {key: kept.pop(key) for key in _GEN_KEYS if kept.get(key) is not None}
    request = {key: kept.pop(key) for key in _REQUEST_KEYS if kept.get(key) is not None}
    if request:
        gen["request"] = request
    if "model" in gen:
        node.kind = "model"
    if gen:
        node.meta["gen"] = gen
    if kept.get("created") is not None:
        node.created = to_iso(kept["created"])
        if node.created is not None:
            kept.pop("created")
    if kept.get("logprobs") is not None:
        record = logprobs_from_openai(kept["logprobs"])
        fitted = fit(node.text, record) if record is not None else None
        if fitted is not None:
            node.meta["logprobs"] = fitted
            kept.pop("logprobs")
    if kept:
        fields["metadata"] = kept
    node.fields = fields
    return node
