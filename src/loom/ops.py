"""Every change to a document, as a library function.

Mutations run inside a journal transaction, so each is one undoable step and a
failure half-way leaves the document untouched. Cursor moves are not journaled.
Invariants kept here: parent/children links agree, `roots` lists exactly the
parentless nodes, and text a node's descendants inherit never changes unless the
caller explicitly asked for it (`in_place=True`, `move`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from loom.document import HEADER, KINDS, Document, Node, Record, now
from loom.errors import InvalidOperation, NotFound
from loom.journal import transaction
from loom.logprobs import META_KEY as LOGPROBS_KEY
from loom.logprobs import split_logprobs


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InvalidOperation(f"unknown node kind {kind!r} (expected one of: {', '.join(KINDS)})")


def _attach(doc: Document, node_id: str, parent_id: str | None, index: int | None) -> None:
    """Link an unattached node under `parent_id` (None: as a root) at `index` (None: last)."""
    doc._set(node_id, "parent", parent_id)
    siblings = doc.data["roots"] if parent_id is None else doc.nodes[parent_id].get("children", ())
    at = len(siblings) if index is None else min(max(0, index), len(siblings))
    doc._splice(HEADER if parent_id is None else parent_id, at, 0, [node_id])


def _detach(doc: Document, node_id: str) -> int:
    """Unlink a node from its parent (or the roots); returns the index it had."""
    parent_id = doc.nodes[node_id].get("parent")
    siblings = doc.data["roots"] if parent_id is None else doc.nodes[parent_id]["children"]
    index = siblings.index(node_id)
    doc._splice(HEADER if parent_id is None else parent_id, index, 1)
    if parent_id is not None and doc.nodes[parent_id].get("last_child") == node_id:
        doc._set(parent_id, "last_child", None)
    return index


def _new_record(text: str, kind: str, meta: dict[str, Any] | None, *, visited: bool) -> Record:
    stamp = now()
    rec: Record = {"text": text, "kind": kind, "created": stamp, "modified": stamp}
    if kind == "human":
        del rec["kind"]  # the default
    if visited:
        rec["visited"] = True
    if meta:
        rec["meta"] = meta
    return rec


# ---- adding ---------------------------------------------------------------------------


def add_child(
    doc: Document,
    parent: str | None,
    text: str,
    *,
    kind: str = "human",
    meta: dict[str, Any] | None = None,
    index: int | None = None,
    move_cursor: bool = True,
    visited: bool | None = None,
    node_id: str | None = None,
) -> Node:
    """Add a node under `parent` (None: a new root). Returns the new node.

    Generated nodes (kind "model") start unread unless `visited` says otherwise.
    """
    _check_kind(kind)
    if parent is not None:
        doc.node(parent)
    new = node_id or doc.new_node_id()
    seen = visited if visited is not None else kind != "model"
    with transaction(doc, "add", f"add {'root' if parent is None else 'child of ' + parent}"):
        doc._create(new, _new_record(text, kind, meta, visited=seen))
        _attach(doc, new, parent, index)
        if move_cursor:
            goto(doc, new)
        elif doc.cursor_id is None:
            doc.settle_cursor()  # the first node of a document becomes its cursor
    return Node(doc, new)


Segment = tuple[str, str, dict[str, Any] | None]  # text, kind, meta


def add_chain(
    doc: Document,
    parent: str | None,
    segments: Sequence[Segment],
    *,
    index: int | None = None,
    move_cursor: bool = True,
    visited: bool | None = None,
) -> list[Node]:
    """Add a chain of nodes under `parent` (None: a new root), each the child of the one before.

    The first goes at `index` among `parent`'s children. One undoable step, and one
    cursor update however long the chain is (per-node `add_child` would walk the
    path from the root once per node). Returns the new nodes, top first.
    """
    for _, kind, _ in segments:
        _check_kind(kind)
    if parent is not None:
        doc.node(parent)
    made: list[str] = []
    with transaction(doc, "add", f"add {len(segments)} node(s) under {parent or 'the roots'}"):
        above = parent
        for text, kind, meta in segments:
            new = doc.new_node_id()
            seen = visited if visited is not None else kind != "model"
            doc._create(new, _new_record(text, kind, meta, visited=seen))
            _attach(doc, new, above, index if above == parent else None)
            made.append(new)
            above = new
        if move_cursor and made:
            goto(doc, made[-1])
        else:
            doc.settle_cursor()
    return [Node(doc, m) for m in made]


def add_sibling(doc: Document, node: str, text: str, **kwargs: Any) -> Node:
    """Add a node right after `node`, under the same parent (or as the next root)."""
    return add_child(
        doc, doc.nodes[node].get("parent"), text, index=doc.position(node) + 1, **kwargs
    )


# ---- editing --------------------------------------------------------------------------


def edit(doc: Document, node: str, text: str, *, in_place: bool = False) -> Node:
    """Change a node's text; returns the node that now holds it.

    A node with children keeps its text (their full text depends on it): the new
    text goes into a new sibling version, unless `in_place` is asked for. In-place
    edits keep the previous text in the node's history.
    """
    rec = doc.node(node).record
    if text == rec.get("text", ""):
        return Node(doc, node)
    # Model-written text changed by hand is marked so: its record no longer says all of it.
    edited = rec.get("kind") == "model" or rec.get("edited") or None
    if rec.get("children") and not in_place:
        with transaction(doc, "edit", f"new version of {node}"):
            meta = {"version_of": node}
            version = add_sibling(doc, node, text, kind=rec.get("kind", "human"), meta=meta)
            doc._set(version.id, "edited", edited)
        return version
    with transaction(doc, "edit", f"edit {node}"):
        earlier: dict[str, Any] = {"text": rec.get("text", ""), "at": rec.get("modified") or now()}
        meta = dict(rec.get("meta") or {})
        stale = meta.pop(LOGPROBS_KEY, None)
        if stale is not None:
            # The token probabilities describe the old text: they go with it into history.
            earlier[LOGPROBS_KEY] = stale
            doc._set(node, "meta", meta or None)
        restored = _history_logprobs(rec, text)
        if restored is not None:
            doc._set(node, "meta", {**meta, LOGPROBS_KEY: restored})
        doc._set(node, "history", [*rec.get("history", []), earlier])
        doc._set(node, "text", text)
        doc._set(node, "modified", now())
        doc._set(node, "edited", edited)
    return Node(doc, node)


def _history_logprobs(rec: Record, text: str) -> dict[str, Any] | None:
    """The probabilities an earlier text kept in history, when that text comes back."""
    for entry in reversed(rec.get("history", [])):
        probs = entry.get(LOGPROBS_KEY)
        spelled = isinstance(probs, dict) and "".join(probs.get("tokens", [])) == text
        if entry.get("text") == text and spelled:
            return probs
    return None


def versions(doc: Document, node: str) -> list[dict[str, Any]]:
    """Every text the node has had, then its sibling versions.

    The node's texts are numbered (`index`) oldest first: its in-place history
    `0..k-1`, then its current text `k`. Sibling versions (edits of a node with
    children, see `edit`) follow, unnumbered, with their `id`.
    """
    target = doc.node(node)
    entries: list[dict[str, Any]] = [
        {"index": i, "text": h.get("text", ""), "at": h.get("at"), "kind": "earlier"}
        for i, h in enumerate(target.history)
    ]
    entries.append(
        {"index": len(entries), "text": target.text, "at": target.modified, "kind": "current"}
    )
    origin = target.meta.get("version_of")
    related = {node, origin} - {None}  # versions of this node, or of the one it is a version of
    for s in doc.sibling_ids(node):
        rec = doc.nodes[s]
        if s != node and (s == origin or rec.get("meta", {}).get("version_of") in related):
            entries.append(
                {"id": s, "text": rec.get("text", ""), "at": rec.get("created"), "kind": "version"}
            )
    return entries


def restore_version(doc: Document, node: str, index: int, *, in_place: bool = False) -> Node:
    """Bring back text number `index`, numbered as `versions` numbers them.

    0 is the oldest earlier text and `len(history)` the current one, whose
    restoring changes nothing.
    """
    history = doc.node(node).history
    if not 0 <= index <= len(history):
        raise NotFound(f"node {node} has no text {index}: its texts are numbered 0..{len(history)}")
    if index == len(history):
        return Node(doc, node)
    return edit(doc, node, history[index]["text"], in_place=in_place)


def split(doc: Document, node: str, at: int) -> Node:
    """Cut a node's text at offset `at`: the node keeps the head, a new child the tail.

    The node's children move under the tail, so every full text stays the same.
    Returns the tail node.
    """
    rec = doc.node(node).record
    text = rec.get("text", "")
    if at < 0:
        at += len(text)
    if not 0 < at < len(text):
        raise InvalidOperation(
            f"split offset must be inside the node's text (1..{len(text) - 1}), got {at}"
        )
    tail_id = doc.new_node_id()
    with transaction(doc, "split", f"split {node} at {at}"):
        head_meta = dict(rec.get("meta", {}))
        tail_meta: dict[str, Any] = {"split_from": node}
        if "logprobs" in head_meta:
            head_meta["logprobs"], tail_meta["logprobs"] = split_logprobs(head_meta["logprobs"], at)
        children = rec.get("children", [])
        tail = _new_record(
            text[at:], rec.get("kind", "human"), tail_meta, visited=bool(rec.get("visited"))
        )
        if children:
            tail["children"] = list(children)
            if rec.get("last_child"):
                tail["last_child"] = rec["last_child"]
        tail["parent"] = node
        doc._create(tail_id, tail)
        for child in children:
            doc._set(child, "parent", tail_id)
        doc._set(node, "children", [tail_id])
        doc._set(node, "last_child", tail_id)
        doc._set(node, "text", text[:at])
        doc._set(node, "meta", head_meta or None)
        doc._set(node, "modified", now())
        if doc.cursor_id == node:
            doc._set_header("cursor", tail_id)
    return Node(doc, tail_id)


def split_at_marker(doc: Document, node: str, marker: str, *, after: bool = False) -> Node:
    text = doc.node(node).text
    pos = text.find(marker)
    if pos < 0:
        raise NotFound(f"marker {marker!r} not found in node {node}")
    return split(doc, node, pos + len(marker) if after else pos)


def merge(doc: Document, node: str) -> Node:
    """Join a node onto its parent; returns the node holding the joined text.

    If the parent has other children, their text must not change: the joined
    text goes into a new version of the parent (a sibling of it) that takes the
    node's children, and the parent stays as it was for the others.
    """
    rec = doc.node(node).record
    parent_id = rec.get("parent")
    if parent_id is None:
        raise InvalidOperation(f"node {node} is a root: there is no parent to merge it into")
    parent = doc.nodes[parent_id]
    joined = parent.get("text", "") + rec.get("text", "")
    children = list(rec.get("children", []))
    with transaction(doc, "merge", f"merge {node} into {parent_id}"):
        was_cursor = doc.cursor_id == node
        if parent.get("children") == [node]:
            target = parent_id
            meta = dict(parent.get("meta", {}))
            meta["merged_from"] = [*meta.get("merged_from", []), _merged_record(node, rec)]
            meta.pop("logprobs", None)  # no longer aligned with the joined text
            doc._set(parent_id, "text", joined)
            doc._set(parent_id, "meta", meta)
            doc._set(parent_id, "modified", now())
            tags = sorted(set(parent.get("tags", [])) | set(rec.get("tags", [])))
            doc._set(parent_id, "tags", tags or None)
            if rec.get("note"):  # notes are the user's words: both survive the join
                doc._set(
                    parent_id, "note", "\n\n".join(filter(None, [parent.get("note"), rec["note"]]))
                )
            if "bookmark" in rec and "bookmark" not in parent:
                doc._set(parent_id, "bookmark", rec["bookmark"])
            doc._set(parent_id, "children", children or None)
            doc._set(parent_id, "last_child", rec.get("last_child"))
        else:
            meta = {"version_of": parent_id, "merged_from": [_merged_record(node, rec)]}
            target = add_sibling(
                doc,
                parent_id,
                joined,
                kind=parent.get("kind", "human"),
                meta=meta,
                move_cursor=False,
            ).id
            doc._set(target, "children", children or None)
            doc._set(target, "last_child", rec.get("last_child"))
            _detach(doc, node)
        for child in children:
            doc._set(child, "parent", target)
        doc._remove(node)
        if was_cursor or doc.cursor_id is None:
            goto(doc, target)
    return Node(doc, target)


def _merged_record(node: str, rec: Record) -> dict[str, Any]:
    """What a merged-away node leaves behind: everything but its text and links."""
    keep = ("meta", "note", "history", "bookmark", "tags", "kind", "created")
    return {"id": node, **{k: rec[k] for k in keep if k in rec}}


def move(doc: Document, node: str, new_parent: str | None, *, index: int | None = None) -> Node:
    """Re-parent a node (None: make it a root) at `index` among its new siblings (None: last).

    Refuses to create a cycle.
    """
    doc.node(node)
    if index is not None and index < 0:
        raise InvalidOperation(f"a position among siblings cannot be negative, got {index}")
    if new_parent is not None:
        doc.node(new_parent)
        if doc.is_archived(new_parent):
            # Inside a deleted subtree the node would vanish and `purge` would take it.
            raise InvalidOperation(
                f"cannot move {node} under {new_parent}: it is deleted (restore it first)"
            )
        if doc.is_descendant(new_parent, node):
            raise InvalidOperation(
                f"cannot move {node} under {new_parent}: that is inside its own subtree"
            )
    with transaction(doc, "move", f"move {node} under {new_parent or 'the roots'}"):
        _detach(doc, node)
        _attach(doc, node, new_parent, index)
        doc.settle_cursor()  # moving into a deleted subtree hides what it carries
    return Node(doc, node)


# ---- deleting -------------------------------------------------------------------------


def archive(doc: Document, node: str) -> Node:
    """Delete a node and its subtree, recoverably (`restore` brings it back)."""
    doc.node(node)
    with transaction(doc, "rm", f"archive {node}"):
        doc._set(node, "archived", True)
        doc._set(node, "modified", now())
        doc.settle_cursor()
    return Node(doc, node)


def restore(doc: Document, node: str) -> Node:
    """Undelete an archived node (and so its subtree)."""
    if not doc.node(node).record.get("archived"):
        raise InvalidOperation(f"node {node} is not deleted")
    with transaction(doc, "restore", f"restore {node}"):
        doc._set(node, "archived", None)
        doc._set(node, "modified", now())
        doc.settle_cursor()
    return Node(doc, node)


def purge(doc: Document, node: str) -> list[str]:
    """Remove a node and its whole subtree for good. Returns the removed ids."""
    doc.node(node)
    gone = doc.subtree_ids(node)
    with transaction(doc, "purge", f"purge {node} ({len(gone)} nodes)"):
        if doc.cursor_id in gone:
            doc._set(node, "archived", True)  # purged just below: lets the cursor step out first
            doc.settle_cursor()
        _detach(doc, node)
        for node_id in gone:
            doc._remove(node_id)
        doc.settle_cursor()
    return gone


def purge_archived(doc: Document) -> list[str]:
    """Purge every archived subtree in the document."""
    tops = [i for i in doc.walk(include_archived=True) if doc.nodes[i].get("archived")]
    gone: list[str] = []
    with transaction(doc, "purge", f"purge {len(tops)} archived subtree(s)"):
        for top in tops:
            if top in doc.nodes:
                gone.extend(purge(doc, top))
    return gone


# ---- marking --------------------------------------------------------------------------


def set_bookmark(doc: Document, node: str, on: bool = True, *, title: str | None = None) -> Node:
    doc.node(node)
    value: dict[str, Any] | None = None
    if on:
        value = {"title": title} if title else {}
    with transaction(doc, "bookmark", f"{'bookmark' if on else 'unbookmark'} {node}"):
        doc._set(node, "bookmark", value)
    return Node(doc, node)


def tag(doc: Document, node: str, add: Sequence[str] = (), remove: Sequence[str] = ()) -> Node:
    current = doc.node(node).tags
    for name in add:
        if not name or any(c.isspace() for c in name):
            raise InvalidOperation(f"a tag is one word, got {name!r}")
    updated = [t for t in current if t not in set(remove)]
    updated += [t for t in dict.fromkeys(add) if t not in updated]
    with transaction(doc, "tag", f"tag {node}"):
        doc._set(node, "tags", updated or None)
    return Node(doc, node)


def set_note(doc: Document, node: str, text: str | None) -> Node:
    doc.node(node)
    with transaction(doc, "note", f"note on {node}"):
        doc._set(node, "note", text or None)
    return Node(doc, node)


def set_meta(doc: Document, node: str, key: str, value: Any) -> Node:
    """Set (or with None, remove) one key of a node's metadata."""
    meta = doc.node(node).meta
    if value is None:
        meta.pop(key, None)
    else:
        meta[key] = value
    with transaction(doc, "meta", f"set meta.{key} on {node}"):
        doc._set(node, "meta", meta or None)
    return Node(doc, node)


def set_document_field(doc: Document, key: str, value: Any) -> None:
    """Set title, description, system or defaults (None removes it)."""
    if key not in ("title", "description", "system", "defaults"):
        raise InvalidOperation(f"{key!r} is not a document field you can set")
    with transaction(doc, "set", f"set {key}"):
        doc._set_header(key, value if value not in ("", {}) else None)


# ---- the cursor (not journaled) ------------------------------------------------------------


def goto(doc: Document, node: str) -> Node:
    """Make `node` current: mark it visited and remember the path to it for `down`."""
    target = doc.node(node)
    path = doc.path_ids(node)
    if any(map(doc.archived_flag, path)):
        raise InvalidOperation(
            f"node {node} is deleted (restore it first with `loom restore {node}`)"
        )
    for parent, child in itertools.pairwise(path):
        if doc.field(parent, "last_child") != child:
            doc._set(parent, "last_child", child)
    if not doc.field(node, "visited"):
        doc._set(node, "visited", True)
    if doc.data.get("cursor") != node:
        doc._set_header("cursor", node)
    return target


def parent_of(doc: Document, node: str, steps: int = 1) -> str:
    """The ancestor `steps` levels up (the root if there are fewer)."""
    nodes = doc.nodes
    current = nodes[node].get("parent")
    if current is None:
        raise NotFound(f"node {node} is a root: it has no parent")
    for _ in range(min(steps, len(nodes)) - 1):  # bounded: a damaged cycle cannot loop forever
        up = nodes[current].get("parent")
        if up is None:
            break
        current = up
    return str(current)


def child_of(doc: Document, node: str, index: int | None = None) -> str:
    """The child at `index` (0-based), or else the last-visited child, or else the first."""
    children = doc.live_child_ids(node)
    if not children:
        raise NotFound(f"node {node} has no children")
    if index is None:
        return Node(doc, node).last_child_id or children[0]
    if not -len(children) <= index < len(children):
        raise NotFound(f"node {node} has {len(children)} children; no child {index + 1}")
    return children[index]


def sibling_of(doc: Document, node: str, step: int) -> str:
    """The next (step=1) or previous (step=-1) live sibling, without wrapping."""
    parent = doc.nodes[node].get("parent")
    siblings = doc.nodes[parent].get("children", ()) if parent else doc.data["roots"]
    i = doc.position(node) + step
    while 0 <= i < len(siblings):  # O(distance), not O(siblings): a node may have 100k
        if not doc.archived_flag(siblings[i]):
            return str(siblings[i])
        i += step
    raise NotFound(f"node {node} has no {'next' if step > 0 else 'previous'} sibling")


def bookmark_from(doc: Document, node: str | None, step: int) -> str:
    """The next (step=1) or previous (step=-1) bookmark in document order, wrapping around."""
    marks = [i for i in doc.walk() if "bookmark" in doc.nodes[i]]
    if not marks:
        raise NotFound("the document has no bookmarks")
    return next_in_order(doc, node, marks, step)


def next_in_order(doc: Document, node: str | None, targets: Sequence[str], step: int) -> str:
    """The first of `targets` (listed in document order) after (step=1) or before (step=-1)
    `node` in document order, wrapping around: how `next --bookmark` and a UI's "next
    search match" move."""
    if not targets:
        raise NotFound("nothing to move to")
    if node is None or node not in doc.nodes:
        return targets[0] if step > 0 else targets[-1]
    position = {n: i for i, n in enumerate(doc.walk(include_archived=True))}
    here = position.get(node, -1)
    if step > 0:
        after = [t for t in targets if position.get(t, -1) > here]
        return after[0] if after else targets[0]
    before = [t for t in targets if position.get(t, -1) < here]
    return before[-1] if before else targets[-1]


def root_of(doc: Document, node: str) -> str:
    return doc.path_ids(node)[0]
