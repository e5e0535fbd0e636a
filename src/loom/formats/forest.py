"""The intermediate forest an importer builds, linking flat records into it, and `graft`.

An importer turns a foreign file into an `ImportedForest` (source ids, ordered
children, loom-shaped fields) and never touches a document; `graft` is the only
code that adds a forest to a document, inside one journal transaction, so an
import is one undoable step and a failure leaves the document as it was.
Everything here is iterative: imported trees can be thousands of levels deep.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from loom.document import Document, Record, now
from loom.errors import DocumentError
from loom.files import size_text
from loom.formats.readers import fix_text
from loom.formats.secrets import drop_secrets
from loom.ids import new_id
from loom.journal import transaction


@dataclass
class ImportedNode:
    """One node as an importer read it. `id`, `children` and `last_child` are source ids."""

    id: str
    text: str = ""
    children: list[str] = field(default_factory=list)
    kind: str = "human"
    created: str | None = None
    modified: str | None = None
    tags: list[str] = field(default_factory=list)
    bookmark: dict[str, Any] | None = None
    note: str = ""
    visited: bool = False
    last_child: str | None = None
    archived: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # loom meta: gen, logprobs, …
    fields: dict[str, Any] = field(default_factory=dict)  # source fields loom has no place for
    version_of: str | None = None  # source id of the node this one rewrites
    # Record keys kept exactly as they are (native input written by a newer loom).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImportedForest:
    """A whole foreign file, ready to graft: nodes keyed by source id, roots in order."""

    format: str
    nodes: dict[str, ImportedNode] = field(default_factory=dict)
    roots: list[str] = field(default_factory=list)
    cursor: str | None = None
    title: str = ""
    description: str = ""
    system: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)  # document-level source fields
    notes: list[str] = field(default_factory=list)  # what did not carry over, for the user
    source: str = ""  # the file (or stream) it came from
    # Native loom input: records already are loom records, so no meta.import is added.
    native: bool = False
    input_bytes: int = 0  # what was read to build it (the file and any side files)

    def order(self) -> list[str]:
        """Every node id, depth-first in document order."""
        out: list[str] = []
        stack = list(reversed(self.roots))
        while stack:
            current = stack.pop()
            out.append(current)
            stack.extend(reversed(self.nodes[current].children))
        return out

    def check(self) -> None:
        """Each node is reached exactly once from the roots; raise DocumentError otherwise.

        A cursor naming no node is dropped (with a note): the graft then starts at a root.
        """
        nodes = self.nodes
        seen: set[str] = set()
        stack = list(self.roots)
        while stack:
            current = stack.pop()
            if current not in nodes:
                raise DocumentError(
                    f"{self.format}: the tree refers to a node {short(current)} that does not exist"
                )
            if current in seen:
                raise DocumentError(
                    f"{self.format}: node {short(current)} appears twice in the tree"
                )
            seen.add(current)
            stack.extend(nodes[current].children)
        if len(seen) != len(nodes):
            missing = next(i for i in nodes if i not in seen)
            raise DocumentError(
                f"{self.format}: node {short(missing)} is not reachable from any root (a parent cycle)"
            )
        if self.cursor is not None and self.cursor not in nodes:
            self.notes.append(
                f"the current node {short(self.cursor)} does not exist; the cursor starts at the first root"
            )
            self.cursor = None

    def check_growth(self) -> None:
        """Refuse a forest holding far more than its input (DocumentError).

        Imported data is counted as it will be stored (texts, meta, kept fields): a file
        whose many nodes point at one shared blob (a pyloom model response, a chapter
        title) must not become a document hundreds of times its size. Stops counting at
        the limit, so the check itself stays small.
        """
        if not self.input_bytes:
            return
        limit = max(GROWTH_LIMIT * self.input_bytes, GROWTH_FLOOR)
        total = 0
        parts: Iterable[Any] = (
            (n.text, n.note, n.meta, n.fields, n.tags, n.bookmark, n.history, n.extra)
            for n in self.nodes.values()
        )
        for part in itertools.chain([self.fields], parts):
            try:
                total += len(orjson.dumps(part))
            except orjson.JSONEncodeError:
                continue  # graft reports values that cannot be stored
            if total > limit:
                raise DocumentError(
                    f"{self.format}: importing it would take more than {size_text(limit)} "
                    f"from {size_text(self.input_bytes)} of input (the limit is "
                    f"{GROWTH_LIMIT}× the input): many nodes repeat the same data"
                )

    def drop_secrets(self) -> int:
        """Drop secret-looking keys (API keys, tokens, passwords) from every foreign value.

        Covers the document's and each node's kept source fields and the loom-shaped
        meta an importer filled (generation parameters come from foreign settings);
        a native forest's meta is loom's own, so only what it kept from earlier
        imports is scanned. Adds one note with the count (never the values); returns it.
        """
        self.fields, dropped = drop_secrets(self.fields)
        for node in self.nodes.values():
            node.fields, count = drop_secrets(node.fields)
            dropped += count
            if not self.native:
                node.meta, count = drop_secrets(node.meta)
                dropped += count
            elif isinstance(node.meta.get("import"), dict):
                node.meta["import"], count = drop_secrets(node.meta["import"])
                dropped += count
        if dropped:
            self.notes.append(
                f"{dropped} secret-looking field(s) (API keys, tokens, passwords) were dropped"
            )
        return dropped

    def __len__(self) -> int:
        return len(self.nodes)


# An import holds at most this many times the bytes it read (never less than the floor).
GROWTH_LIMIT = 8
GROWTH_FLOOR = 1024 * 1024


def short(value: object, limit: int = 40) -> str:
    """A source id (or any value) quoted for an error message, cut if long."""
    text = str(value)
    return '"' + (text if len(text) <= limit else text[: limit - 1] + "…") + '"'


def link(
    fmt: str,
    ids: list[str],
    *,
    parents: Mapping[str, str | None] | None = None,
    children: Mapping[str, list[str]] | None = None,
    parent_field: str = "parent",
    first_roots: Iterable[str] = (),
) -> tuple[dict[str, list[str]], list[str]]:
    """Ordered children and roots from parent pointers and/or children lists.

    Children lists give the order; a node whose parent pointer names a parent that
    does not list it is appended to that parent's children, in file order. Broken
    links (a missing node, two parents, a cycle) raise one DocumentError naming them.
    """
    known: set[str] = set()
    for node_id in ids:
        if node_id in known:
            raise DocumentError(f"{fmt}: node id {short(node_id)} is used by two nodes")
        known.add(node_id)
    owner: dict[str, str] = {}
    kids: dict[str, list[str]] = {i: [] for i in ids}
    for parent in ids:
        for child in (children or {}).get(parent, ()):
            if child not in known:
                raise DocumentError(
                    f"{fmt}: node {short(parent)} lists child {short(child)} that does not exist"
                )
            if child == parent:
                raise DocumentError(f"{fmt}: node {short(parent)} lists itself as its child")
            if child in owner:
                if owner[child] == parent:
                    raise DocumentError(
                        f"{fmt}: node {short(parent)} lists child {short(child)} twice"
                    )
                raise DocumentError(
                    f"{fmt}: node {short(child)} is listed as a child of both {short(owner[child])} and {short(parent)}"
                )
            owner[child] = parent
            kids[parent].append(child)
    for node in ids:
        declared = (parents or {}).get(node)
        if declared is None:
            continue
        parent = declared
        if parent not in known:
            raise DocumentError(
                f"{fmt}: node {short(node)} has {parent_field} {short(parent)}, which does not exist"
            )
        if parent == node:
            raise DocumentError(f"{fmt}: node {short(node)} is its own {parent_field}")
        if node in owner:
            if owner[node] != parent:
                raise DocumentError(
                    f"{fmt}: node {short(node)} has {parent_field} {short(parent)}, "
                    f"but node {short(owner[node])} lists it as its child"
                )
            continue
        owner[node] = parent
        kids[parent].append(node)
    preferred = [r for r in dict.fromkeys(first_roots) if r in known and r not in owner]
    roots = preferred + [i for i in ids if i not in owner and i not in preferred]
    reached = 0
    stack = list(roots)
    while stack:
        current = stack.pop()
        reached += 1
        stack.extend(kids[current])
    if reached != len(ids):
        stuck = _cycle_member(ids, roots, kids)
        raise DocumentError(
            f"{fmt}: the {parent_field} links of node {short(stuck)} form a cycle (it is not reachable from any root)"
        )
    return kids, roots


def _cycle_member(ids: list[str], roots: list[str], kids: dict[str, list[str]]) -> str:
    reachable: set[str] = set()
    stack = list(roots)
    while stack:
        current = stack.pop()
        reachable.add(current)
        stack.extend(kids[current])
    return next(i for i in ids if i not in reachable)


def _fresh_id(doc: Document, taken: set[str]) -> str:
    while True:
        candidate = new_id(doc.nodes)
        if candidate not in taken:
            taken.add(candidate)
            return candidate


def graft(
    doc: Document,
    forest: ImportedForest,
    parent: str | None = None,
    *,
    move_cursor: bool = True,
    header: bool | None = None,
) -> list[str]:
    """Add `forest` to `doc` as new roots, or as children of `parent`; return the new root ids.

    One journal transaction: a single undo removes the whole import. Nodes get fresh
    loom ids; source ids stay in `meta.import.id`. The cursor moves to the source's
    current node (else the first new root) unless `move_cursor` is false. `header`
    (default: the document was empty) copies the source's title, description and
    system message into fields the document has not set.
    """
    forest.check()
    forest.drop_secrets()  # formats.read already did; a forest built in code may not have
    if parent is not None:
        doc.node(parent)
    if header is None:
        header = len(doc.nodes) == 0
    order = forest.order()
    taken: set[str] = set()
    ids = {source: _fresh_id(doc, taken) for source in order}
    stamp = now()
    records = {ids[s]: _record(forest, forest.nodes[s], ids) for s in order}
    for source in forest.roots:
        if parent is not None:
            records[ids[source]]["parent"] = parent
    for source in order:
        for child in forest.nodes[source].children:
            records[ids[child]]["parent"] = ids[source]
    new_roots = [ids[r] for r in forest.roots]
    cursor = _live_cursor(
        records, ids.get(forest.cursor) if forest.cursor is not None else None, new_roots
    )
    if parent is not None and doc.is_archived(parent):
        cursor = None  # grafted into a deleted subtree: the cursor stays where it is
    if cursor is not None:
        # `loom down` from any ancestor should lead back to the source's current node.
        current = cursor
        while (up := records.get(current, {}).get("parent")) in records:
            records[up].setdefault("last_child", current)
            current = up
        records[cursor]["visited"] = True
    try:
        # What cannot be saved must fail here, with nothing changed, not at save time.
        orjson.dumps([records, forest.fields])
    except orjson.JSONEncodeError as exc:
        raise DocumentError(
            f"{forest.format}: the file holds a value loom cannot store ({exc})"
        ) from None
    summary = f"import {len(order)} node(s) from {forest.source or forest.format} ({forest.format})"
    with transaction(doc, "import", summary):
        for node_id, record in records.items():
            doc._create(node_id, record)
        if parent is None:
            doc._set_header("roots", [*doc.root_ids, *new_roots])
        elif new_roots:
            doc._set(parent, "children", [*doc.node(parent).child_ids, *new_roots])
        if move_cursor and cursor is not None:
            doc._set_header("cursor", cursor)
        if header:
            for key, value in (
                ("title", forest.title),
                ("description", forest.description),
                ("system", forest.system),
            ):
                if value and not doc.data.get(key):
                    doc._set_header(key, fix_text(value))
        if not forest.native or forest.fields:
            imports = dict(doc.data.get("import") or {})
            entry: dict[str, Any] = {"at": stamp, "source": forest.source, "roots": new_roots}
            if forest.fields:
                entry["fields"] = forest.fields
            imports[forest.format] = [*imports.get(forest.format, []), entry]
            doc._set_header("import", imports)
        # Even with move_cursor false: a document with live nodes always has a cursor.
        doc.settle_cursor()
    return new_roots


def _live_cursor(records: Mapping[str, Record], wanted: str | None, roots: list[str]) -> str | None:
    """`wanted`, or its nearest ancestor not deleted, else the first live root (None if none).

    The cursor must sit on a live node; a source's current node may be archived.
    """
    if wanted is not None:
        path = [wanted]
        up = records[wanted].get("parent")
        while isinstance(up, str) and up in records:
            path.append(up)
            up = records[up].get("parent")
        live = None
        for node_id in reversed(path):
            if records[node_id].get("archived"):
                break
            live = node_id
        if live is not None:
            return live
    return next((r for r in roots if not records[r].get("archived")), None)


_REFERENCE_KEYS = ("version_of", "split_from")


def _record(forest: ImportedForest, node: ImportedNode, ids: Mapping[str, str]) -> Record:
    rec: Record = {"text": fix_text(node.text)}
    if node.kind != "human":
        rec["kind"] = node.kind
    if node.children:
        rec["children"] = [ids[c] for c in node.children]
    if node.created:
        rec["created"] = node.created
    if node.modified or node.created:
        rec["modified"] = node.modified or node.created
    if node.tags:
        rec["tags"] = list(node.tags)
    if node.bookmark is not None:
        rec["bookmark"] = dict(node.bookmark)
    if node.note:
        rec["note"] = fix_text(node.note)
    if node.visited:
        rec["visited"] = True
    if node.last_child is not None and node.last_child in node.children:
        rec["last_child"] = ids[node.last_child]
    if node.archived:
        rec["archived"] = True
    if node.history:
        rec["history"] = [dict(h) for h in node.history]
    meta = dict(node.meta)
    for key in _REFERENCE_KEYS:
        # Native input refers to its own ids; point them at the new ones.
        if forest.native and isinstance(meta.get(key), str):
            if meta[key] in ids:
                meta[key] = ids[meta[key]]
            else:
                meta.pop(key)
    if node.version_of is not None and node.version_of in ids:
        meta["version_of"] = ids[node.version_of]
    if not forest.native:
        provenance: dict[str, Any] = {"format": forest.format, "id": node.id}
        if node.fields:
            provenance["fields"] = node.fields
        meta["import"] = provenance
    if meta:
        rec["meta"] = meta
    for key, value in node.extra.items():
        rec.setdefault(key, value)
    return rec
