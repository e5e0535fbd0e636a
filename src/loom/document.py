"""The document: a forest of nodes in a flat map, a cursor, and read-only queries.

The in-memory form *is* the file's JSON (see docs/schema.md): records are plain
dicts, so loading costs one JSON decode and unknown fields survive untouched.
`Node` is a thin view over one record. Every change goes through the primitives
at the bottom (`_set`, `_create`, `_remove`, `_set_header`), which report to the
active transaction so undo/redo come from one place (loom.journal).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

from loom.errors import AmbiguousId, DocumentError, NotFound
from loom.ids import new_id

if TYPE_CHECKING:
    from loom.changes import ChangeSet
    from loom.journal import Transaction

FORMAT = "loom"
SCHEMA_VERSION = 2  # 2: journal changes may splice children lists (docs/schema.md)
KINDS = ("human", "model", "import", "system", "user", "assistant")
CURSOR_REF = "@"
# Top-level keys that are not part of the undoable header.
NOT_HEADER = ("nodes", "journal")

Record = dict[str, Any]
HEADER = ""  # the change id of the document header (see loom.changes)


_second: list[Any] = [None, ""]  # the last whole second formatted, reused within that second


def now() -> str:
    """The current UTC time as ISO 8601 with milliseconds, e.g. 2026-11-21T13:45:02.123Z."""
    millis = int(time.time() * 1000)
    second = millis // 1000
    if _second[0] != second:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{millis % 1000:03d}Z"


class IdOrder(Protocol):
    """Node ids in sorted order: what prefix lookups and short ids need."""

    def prefixed(self, prefix: str) -> list[str]: ...

    def neighbours(self, node_id: str) -> list[str]: ...


class SortedIds:
    """An `IdOrder` over a sorted list of the ids."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.items = sorted(ids)

    def prefixed(self, prefix: str) -> list[str]:
        """The ids starting with `prefix`, in order."""
        items = self.items
        i = bisect.bisect_left(items, prefix)
        out = []
        while i < len(items) and items[i].startswith(prefix):
            out.append(items[i])
            i += 1
        return out

    def neighbours(self, node_id: str) -> list[str]:
        """The ids just before and just after `node_id` in sorted order (not itself)."""
        items = self.items
        i = bisect.bisect_left(items, node_id)
        after = i + 1 if i < len(items) and items[i] == node_id else i
        return [items[j] for j in (i - 1, after) if 0 <= j < len(items)]


class Node:
    """A read-only view of one node. Cheap to create; holds no state of its own."""

    __slots__ = ("doc", "id")

    def __init__(self, doc: Document, node_id: str) -> None:
        self.doc = doc
        self.id = node_id

    @property
    def record(self) -> Record:
        return self.doc.nodes[self.id]

    def __repr__(self) -> str:
        return f"Node({self.id!r}, {self.text[:30]!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Node) and other.doc is self.doc and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def text(self) -> str:
        return str(self.record.get("text", ""))

    @property
    def kind(self) -> str:
        return str(self.record.get("kind", "human"))

    @property
    def parent_id(self) -> str | None:
        return self.record.get("parent")

    @property
    def parent(self) -> Node | None:
        pid = self.parent_id
        return None if pid is None else Node(self.doc, pid)

    @property
    def child_ids(self) -> list[str]:
        """All children in order, archived ones included."""
        return list(self.record.get("children", ()))

    @property
    def children(self) -> list[Node]:
        """Live (not archived) children in order."""
        return [Node(self.doc, c) for c in self.doc.live_child_ids(self.id)]

    @property
    def created(self) -> str | None:
        return self.record.get("created")

    @property
    def modified(self) -> str | None:
        return self.record.get("modified")

    @property
    def tags(self) -> list[str]:
        return list(self.record.get("tags", ()))

    @property
    def bookmarked(self) -> bool:
        return "bookmark" in self.record

    @property
    def bookmark_title(self) -> str | None:
        mark = self.record.get("bookmark")
        return mark.get("title") if isinstance(mark, dict) else None

    @property
    def note(self) -> str:
        return str(self.record.get("note", ""))

    @property
    def visited(self) -> bool:
        return bool(self.record.get("visited", False))

    @property
    def edited(self) -> bool:
        """Model-written text that was changed by hand (its generation record no longer
        accounts for all of it)."""
        return bool(self.record.get("edited", False))

    @property
    def archived(self) -> bool:
        """True when this node or an ancestor was deleted (and not purged)."""
        return self.doc.is_archived(self.id)

    @property
    def last_child_id(self) -> str | None:
        last = self.record.get("last_child")
        return last if last in self.doc.live_child_ids(self.id) else None

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.record.get("history", ()))

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.record.get("meta", {}))

    @property
    def full_text(self) -> str:
        return self.doc.full_text(self.id)

    @property
    def depth(self) -> int:
        return len(self.doc.path_ids(self.id)) - 1

    def path(self) -> list[Node]:
        """The nodes from this node's root down to this node."""
        return [Node(self.doc, i) for i in self.doc.path_ids(self.id)]

    def to_dict(self, *, full_text: bool = False) -> dict[str, Any]:
        """The node object of loom's JSON contract (`loom.payloads`), every field."""
        from loom import payloads

        fields = (
            payloads.Fields((*payloads.NODE_FIELDS, "full_text")) if full_text else payloads.ALL
        )
        return payloads.node(self, fields)


class Document:
    """A loom document held in memory. Load and save it with loom.store."""

    def __init__(self, data: Record) -> None:
        self.data = data
        # A dict, or a mapping that reads records on demand (loom.indexed).
        self.nodes: MutableMapping[str, Record] = data.setdefault("nodes", {})
        self.data.setdefault("roots", [])
        self.dirty = False
        self._tx: Transaction | None = None
        # What changed since the document was loaded, when the store saves it as a change
        # appended to the file (large documents) rather than by rewriting it whole.
        self.unsaved: ChangeSet | None = None
        self._order: SortedIds | None = None
        self.origin: Any = None  # where the store read it from (see loom.store.save)

    @classmethod
    def new(cls, *, title: str = "", description: str = "", system: str | None = None) -> Document:
        stamp = now()
        data: Record = {
            "format": FORMAT,
            "version": SCHEMA_VERSION,
            "id": new_id(),
            "created": stamp,
            "modified": stamp,
            "roots": [],
            "nodes": {},
        }
        if title:
            data["title"] = title
        if description:
            data["description"] = description
        if system:
            data["system"] = system
        doc = cls(data)
        doc.dirty = True
        return doc

    # ---- header ---------------------------------------------------------------------

    @property
    def id(self) -> str:
        return str(self.data.get("id", ""))

    @property
    def title(self) -> str:
        return str(self.data.get("title", ""))

    @property
    def description(self) -> str:
        return str(self.data.get("description", ""))

    @property
    def system(self) -> str | None:
        return self.data.get("system")

    @property
    def defaults(self) -> dict[str, Any]:
        return dict(self.data.get("defaults", {}))

    @property
    def root_ids(self) -> list[str]:
        return list(self.data.get("roots", ()))

    @property
    def roots(self) -> list[Node]:
        return [Node(self, r) for r in self.root_ids if not self.nodes[r].get("archived")]

    @property
    def cursor_id(self) -> str | None:
        cur = self.data.get("cursor")
        return cur if cur in self.nodes else None

    @property
    def cursor(self) -> Node | None:
        cur = self.cursor_id
        return None if cur is None else Node(self, cur)

    def __len__(self) -> int:
        return len(self.nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.nodes

    # ---- lookup ---------------------------------------------------------------------

    def node(self, node_id: str) -> Node:
        """The node with exactly this id."""
        if node_id not in self.nodes:
            raise NotFound(f"no node {node_id!r} in this document")
        return Node(self, node_id)

    def resolve(self, ref: str | None) -> Node:
        """A node from a user reference: a full id, a unique id prefix, or '@' (the cursor)."""
        if ref is None or ref == CURSOR_REF:
            cur = self.cursor
            if cur is None:
                raise NotFound(
                    "the document is empty: no current node (add one with `loom add TEXT`)"
                )
            return cur
        ref = ref.strip().lower()
        if ref in self.nodes:
            return Node(self, ref)
        if not ref:
            raise NotFound("empty node id")
        matches = self.id_order().prefixed(ref)
        if not matches:
            raise NotFound(f"no node with id or prefix {ref!r}")
        if len(matches) > 1:
            shown = ", ".join(matches[:5])
            raise AmbiguousId(
                f"id prefix {ref!r} matches {len(matches)} nodes ({shown}{', …' if len(matches) > 5 else ''}); type more of it",
                candidates=matches[:20],
            )
        return Node(self, matches[0])

    def short_ids(self, ids: list[str], minimum: int = 4) -> dict[str, str]:
        """The shortest unique prefix (at least `minimum` long) of each id, as git shows hashes."""
        if not ids:
            return {}
        order = self.id_order()
        out: dict[str, str] = {}
        for node_id in ids:
            longest = 0
            for other in order.neighbours(node_id):
                common = 0
                for a, b in zip(node_id, other, strict=False):
                    if a != b:
                        break
                    common += 1
                longest = max(longest, common)
            out[node_id] = node_id[: max(minimum, longest + 1)]
        return out

    def id_order(self) -> IdOrder:
        """The node ids in sorted order (kept until a node is created or removed)."""
        provided = getattr(self.nodes, "id_order", None)
        if provided is not None:  # a store that keeps them sorted already (loom.store)
            order: IdOrder = provided()
            return order
        if self._order is None or len(self._order.items) != len(self.nodes):
            self._order = SortedIds(self.nodes)
        return self._order

    # ---- structure ------------------------------------------------------------------

    def path_ids(self, node_id: str) -> list[str]:
        """Ids from the root down to `node_id`. Linear in depth; safe against cycles."""
        nodes = self.nodes
        fast = getattr(nodes, "path_ids", None)  # through an index, reading no record
        if fast is not None:
            return fast(node_id)
        out: list[str] = []
        current: str | None = node_id
        limit = len(nodes)
        while current is not None:
            out.append(current)
            if len(out) > limit:
                raise DocumentError(f"the parent links of node {node_id!r} form a cycle")
            current = nodes[current].get("parent")
        out.reverse()
        return out

    def full_text(self, node_id: str) -> str:
        """The node's full text: its ancestors' segments and its own, joined."""
        peek = self.peek
        return "".join([peek(i).get("text", "") for i in self.path_ids(node_id)])

    def sibling_ids(self, node_id: str) -> list[str]:
        """The ordered list the node sits in: its parent's children, or the roots."""
        parent = self.nodes[node_id].get("parent")
        return list(self.nodes[parent].get("children", ())) if parent else self.root_ids

    def position(self, node_id: str) -> int:
        """The node's index among its parent's children (or the roots), archived ones counted."""
        parent = self.nodes[node_id].get("parent")
        siblings = self.nodes[parent].get("children", ()) if parent else self.data["roots"]
        return list.index(siblings, node_id)

    def live_child_ids(self, node_id: str) -> list[str]:
        nodes = self.nodes
        fast = getattr(nodes, "live_children", None)  # reads no record (loom.indexed)
        if fast is not None:
            return fast(node_id)
        return [c for c in nodes[node_id].get("children", ()) if not nodes[c].get("archived")]

    def live_sibling_ids(self, node_id: str) -> list[str]:
        """The node's parent's live children, or the live roots."""
        parent = self.field(node_id, "parent")
        if parent is not None:
            return self.live_child_ids(parent)
        return [r for r in self.data["roots"] if not self.archived_flag(r)]

    def archived_flag(self, node_id: str) -> bool:
        """Whether the node itself was deleted (`is_archived`: it or an ancestor)."""
        flag = getattr(self.nodes, "archived_flag", None)  # reads no record (loom.indexed)
        return bool(self.nodes[node_id].get("archived") if flag is None else flag(node_id))

    def is_archived(self, node_id: str) -> bool:
        return any(map(self.archived_flag, self.path_ids(node_id)))

    def subtree_ids(self, node_id: str) -> list[str]:
        """The node and all its descendants, depth-first, archived ones included."""
        nodes = self.nodes
        out: list[str] = []
        stack = [node_id]
        while stack:
            current = stack.pop()
            out.append(current)
            stack.extend(reversed(nodes[current].get("children", ())))
        return out

    def peek(self, node_id: str) -> Record:
        """A record to read, not to change: a large document does not keep it in memory
        (see loom.indexed), so a walk over a million nodes holds one at a time."""
        peek = getattr(self.nodes, "peek", None)
        return self.nodes[node_id] if peek is None else peek(node_id)

    def field(self, node_id: str, name: str) -> Any:
        """One field of a node's record, to read (a large document answers parent,
        last_child, archived and visited from its index, reading no record)."""
        fast = getattr(self.nodes, "field", None)
        return self.peek(node_id).get(name) if fast is None else fast(node_id, name)

    def walk(self, *, include_archived: bool = False) -> Iterator[str]:
        """Every node id in document order (depth-first, roots in order)."""
        stack = list(reversed(self.root_ids))
        peek = self.peek
        while stack:
            current = stack.pop()
            rec = peek(current)
            if rec.get("archived") and not include_archived:
                continue
            yield current
            stack.extend(reversed(rec.get("children", ())))

    def is_descendant(self, node_id: str, ancestor_id: str) -> bool:
        return ancestor_id in self.path_ids(node_id)

    # ---- primitives: every change goes through these ----------------------------------

    def _touch(self, node_id: str) -> None:
        if self._tx is not None:
            self._tx.touch(node_id)
        if self.unsaved is not None:
            self.unsaved.touch(node_id)
        self.dirty = True

    def _set(self, node_id: str, key: str, value: Any) -> None:
        """Set a field on a node; None removes it. Values are replaced, never mutated in place."""
        self._touch(node_id)
        rec = self.nodes[node_id]
        if value is None:
            rec.pop(key, None)
        else:
            rec[key] = value

    def _splice(self, owner: str, at: int, remove: int, insert: list[str] | None = None) -> None:
        """Replace `remove` ids at `at` in a children list (owner HEADER: the roots) by `insert`.

        In place, unlike `_set`: a change to a list of 100k children costs O(1) in the
        journal and the change log, which record it as this splice.
        """
        insert = insert or []
        if owner == HEADER:
            items: list[str] | None = self.data["roots"]
        else:
            items = self.nodes[owner].get("children")
            if not items or len(items) - remove + len(insert) <= 0:
                # A node has no "children" key when it has none: that is a change of field.
                whole = list(items or ())
                whole[at : at + remove] = insert
                self._set(owner, "children", whole or None)
                return
        assert items is not None
        self._touch(owner)
        removed = items[at : at + remove]
        items[at : at + remove] = insert
        for changes in (self._tx, self.unsaved):
            if changes is not None:
                changes.spliced(owner, items, at, removed, list(insert))

    def _create(self, node_id: str, record: Record) -> None:
        if node_id in self.nodes:
            raise DocumentError(f"node {node_id!r} already exists")
        self._put(node_id, record)

    def _put(self, node_id: str, record: Record) -> None:
        """Store a whole record (a new node, or one brought back by undo)."""
        self._touch(node_id)
        if node_id not in self.nodes:
            self._order = None
        self.nodes[node_id] = record

    def _remove(self, node_id: str) -> None:
        self._touch(node_id)
        self._order = None
        del self.nodes[node_id]

    def _set_header(self, key: str, value: Any) -> None:
        if key in NOT_HEADER:
            raise ValueError(f"{key!r} is not a header field")
        self._touch(HEADER)
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value

    def _journaled(self, *step: Any) -> None:
        """The undo log changed (see loom.journal); the change log must replay it."""
        if self.unsaved is not None:
            self.unsaved.journal.append(list(step))
        self.dirty = True

    def settle_cursor(self) -> None:
        """Keep the invariant: with any live node, the cursor is on a live node.

        A cursor inside a deleted subtree moves to the nearest live ancestor; a
        missing one goes to the first live root.
        """
        cursor = self.cursor_id
        if cursor is not None and not self.is_archived(cursor):
            return
        if cursor is not None:
            path = self.path_ids(cursor)
            hidden = next(
                i for i, node_id in enumerate(path) if self.nodes[node_id].get("archived")
            )
            if hidden > 0:
                self._set_header("cursor", path[hidden - 1])
                return
        live = [r for r in self.root_ids if not self.nodes[r].get("archived")]
        target = live[0] if live else None
        if self.data.get("cursor") != target:
            self._set_header("cursor", target)

    def header(self) -> Record:
        """The undoable top-level fields (everything but nodes and the journal)."""
        return {k: v for k, v in self.data.items() if k not in NOT_HEADER}

    def new_node_id(self) -> str:
        return new_id(self.nodes)
