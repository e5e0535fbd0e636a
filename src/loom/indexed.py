"""Large documents: records read on demand through an index, saves appended to the file.

The design and its measurements are in docs/large-documents.md. A document past
`store.INDEXED_FROM` bytes is written in the *indexed layout*: the same JSON
document, one node per line, with a random `snapshot` token in its header and a
`log` list at its end that saves append to:

    {"format":"loom",…header…,"journal":{…},"snapshot":"9f3c…","nodes":{
    "<id>":{…},
    …
    "<id>":{…}},
    "log":[
    {"crc":123,"changes":[…],"journal":[…]},
    {"crc":456,"changes":[…],"journal":[…]}
    ]}

The document is its snapshot (header and nodes) with the log's entries applied in
order (docs/schema.md, "Large documents: the change log"). Beside the file,
`.NAME.idx` (`Index`) maps every node id to the bytes of its record and their
checksum, and holds each node's parent, last child and flags, so a command parses
the header, the log and only the records it reads (`IndexedNodes`), walks the tree
through arrays, and a save appends one entry in place, costing what changed
(`append`). When the log has grown past a fraction of the snapshot, the store
rewrites the file whole (`write`): unchanged records are copied file to file and
the index patched, keeping the file one that any JSON tool reads.

The index is derived data: missing, stale, damaged, or describing a file another
tool has since edited, it is ignored (the file is then read whole) and rebuilt by
the next whole save. Records and log entries carry CRC-32 checksums, so damage
shows as a clean "damaged document" error.
"""

from __future__ import annotations

import bisect
import mmap
import os
import stat
import struct
import sys
import weakref
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom import files
from loom.document import Record
from loom.errors import DocumentError, StorageError

# The arrays are in the machine's byte order: an index written elsewhere is not used.
MAGIC = b"LOOMIX2" + (b"L" if sys.byteorder == "little" else b"B")
NODES_OPEN = b'"nodes":{\n'  # the header region ends with this
NODES_CLOSE = b'},\n"log":[\n'  # between the last record and the first log entry
TAIL = b"\n]}\n"  # after the last log entry
_HEAD = struct.Struct("<8s16s8QII")  # see Index
ARCHIVED = 1  # flag bits: what the record says, readable without parsing it
VISITED = 2
ARCHIVED_CHILD = 4  # some child of this node was archived when the snapshot was written
DELETED = 8  # an entry with no record: a node removed since the index was first built
NONE = 0xFFFFFFFF  # no parent, no last child
UNKNOWN = 0xFFFFFFFE  # a link to no known node: read the record
HOLES_SHARE = 4  # past 1/4 of the entries deleted, the index is built afresh
RECENT = 16  # records only looked at, kept in case they are looked at again


def index_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.idx")


@dataclass
class Layout:
    """Where the parts of an indexed document file are, and how it stands on disk."""

    path: Path
    token: str
    head_end: int  # the header region is [0, head_end): it ends with NODES_OPEN
    nodes_end: int  # NODES_CLOSE starts here
    log_start: int  # the first log entry starts here
    log_end: int  # the end of the last complete log entry: the next append goes here
    entries: int  # complete log entries
    inode: int
    size: int  # the file's size when read


class Index:
    """The `.idx` file of a snapshot. Entries are the records in file order, and keep
    their numbers from one whole save to the next (a removed node leaves a DELETED hole,
    a new one is added at the end), so a save that folds the log in copies the index
    and patches what changed instead of building it again.

    Layout (the machine's byte order, every array 8-byte aligned): a header (`_HEAD`,
    ending with the CRC-32 of the document's header region and that of the rest of the
    index), the ids of the entries joined (each `width` bytes, or ended by `ends` when
    their lengths differ), then per entry: its record's offset (u64), length (u32),
    CRC-32 (u32) and flags (u8: ARCHIVED, VISITED, ARCHIVED_CHILD, DELETED), its
    parent's and its last child's entries (u32; NONE, or UNKNOWN for a link to no known
    node); the live entries in id order (u32); and an open-addressing hash table of
    entries + 1 (u32, keyed by the CRC-32 of the id).
    """

    def __init__(self, buffer: Any) -> None:
        (
            magic,
            token,
            self.count,
            self.live,
            bits,
            self.width,
            self.head_end,
            self.nodes_end,
            self.log_start,
            blob_len,
            self.head_crc,
            checksum,
        ) = _HEAD.unpack_from(buffer, 0)
        if magic != MAGIC:
            raise ValueError("not a loom index")
        if zlib.crc32(memoryview(buffer)[_HEAD.size :]) != checksum:
            raise ValueError("the index is damaged")  # then the document is read whole
        self.token = token.rstrip(b"\0").decode("ascii")
        self.buffer = buffer
        self.bits = bits
        n = self.count
        at = _HEAD.size
        self.blob_at = at
        self.blob_len = blob_len
        at += _pad(blob_len)
        self.ends = self._array(at, "I", 0 if self.width else n)
        at += 0 if self.width else _pad(4 * n)
        self.offsets = self._array(at, "Q", n)
        at += 8 * n
        self.lengths = self._array(at, "I", n)
        at += _pad(4 * n)
        self.crcs = self._array(at, "I", n)
        at += _pad(4 * n)
        self.flags = memoryview(buffer)[at : at + n]
        at += _pad(n)
        self.parents = self._array(at, "I", n)
        at += _pad(4 * n)
        self.last_children = self._array(at, "I", n)
        at += _pad(4 * n)
        self.sorted = self._array(at, "I", self.live)
        at += _pad(4 * self.live)
        self.mask = (1 << bits) - 1
        self.table = self._array(at, "I", 1 << bits)
        if at + 4 * (1 << bits) > len(buffer):
            raise ValueError("index is truncated")

    def _array(self, at: int, code: str, n: int) -> memoryview:
        size = struct.calcsize(code)
        return memoryview(self.buffer)[at : at + size * n].cast(code)  # type: ignore[call-overload]

    def key(self, entry: int) -> bytes:
        """The id of an entry, as bytes."""
        at, width = self.blob_at, self.width
        if width:
            start = at + entry * width
            return bytes(self.buffer[start : start + width])
        ends = self.ends
        return bytes(self.buffer[at + (ends[entry - 1] if entry else 0) : at + ends[entry]])

    def id_at(self, entry: int) -> str:
        return self.key(entry).decode()

    def ids_at(self, entries: Iterable[int]) -> list[str]:
        """The ids of many entries (a path up the tree), decoded in one go."""
        width = self.width
        if not width:
            return [self.id_at(entry) for entry in entries]
        buffer, at = self.buffer, self.blob_at
        return [buffer[at + e * width : at + e * width + width].decode() for e in entries]

    def find(self, node_id: str) -> int:
        """The live entry of `node_id`, or -1."""
        key = node_id.encode()
        mask, table, key_at, flags = self.mask, self.table, self.key, self.flags
        slot = zlib.crc32(key) & mask
        while True:
            found = table[slot]
            if not found:
                return -1
            if key_at(found - 1) == key and not flags[found - 1] & DELETED:
                return found - 1
            slot = (slot + 1) & mask

    def bisect(self, node_id: str) -> int:
        """Where `node_id` is or would be among the live entries in id order."""
        key = node_id.encode()
        ordered, key_at = self.sorted, self.key
        lo, hi = 0, self.live
        while lo < hi:
            mid = (lo + hi) // 2
            if key_at(ordered[mid]) < key:
                lo = mid + 1
            else:
                hi = mid
        return lo


def _pad(n: int) -> int:
    return (n + 7) & ~7


class Snapshot:
    """An open indexed document file: its bytes (mapped, and an open descriptor for
    copying them whole) and their index."""

    def __init__(
        self, layout: Layout, data: mmap.mmap | bytes, fd: int, index: Index, shown: str
    ) -> None:
        self.layout = layout
        self.data = data
        self.fd = fd
        weakref.finalize(self, os.close, fd)
        self.index = index
        self.shown = shown
        self.hint: Callable[[], str] = str  # the end of a "damaged" message: where a backup is

    def raw_at(self, pos: int) -> bytes:
        index = self.index
        start = index.offsets[pos]
        raw = self.data[start : start + index.lengths[pos]]  # bytes: a copy of the mapped ones
        if zlib.crc32(raw) != index.crcs[pos]:
            raise self.damaged(f"the record of node {index.id_at(pos)!r} fails its checksum")
        return raw

    def record_at(self, pos: int, node_id: str) -> Record:
        import orjson

        try:
            rec = orjson.loads(self.raw_at(pos))
        except orjson.JSONDecodeError:
            rec = None
        if type(rec) is not dict:
            raise self.damaged(f"node {node_id!r} is not an object")
        return rec

    def verify(self) -> None:
        """Check every record against its checksum (`loom check`)."""
        flags = self.index.flags
        for entry in range(self.index.count):
            if not flags[entry] & DELETED:
                self.raw_at(entry)

    def damaged(self, what: str) -> DocumentError:
        return DocumentError(f"{self.shown}: damaged document: {what}{self.hint()}")


# ---- reading --------------------------------------------------------------------------------


def open_snapshot(
    path: Path, shown: str, identity: str
) -> tuple[Snapshot, dict[str, Any], list[bytes]] | None:
    """The snapshot, header and raw log entries of an indexed file, or None to read it whole.

    None whenever the index is missing or does not describe this very file, or the file
    is not the one loom last wrote (`identity`: "inode:size:mtime"; another tool may have
    edited it): the caller then reads the file in full, which is always correct.
    """
    try:
        index = Index(_mapped(index_path(path)))
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError, struct.error):
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size < index.log_start:
            return None
        if files.identity(info) != identity:
            return None
        data: mmap.mmap | bytes
        try:
            data = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # a file system without mmap
            with os.fdopen(os.dup(fd), "rb") as handle:
                data = handle.read()
    except OSError:
        os.close(fd)
        return None
    snapshot = Snapshot(_layout(path, index, info), data, fd, index, shown)
    head = data[: index.head_end]
    if (
        zlib.crc32(head) != index.head_crc
        or not head.endswith(NODES_OPEN)
        or data[index.nodes_end : index.log_start] != NODES_CLOSE
    ):
        return None
    import orjson

    try:
        header = orjson.loads(head[: -len(NODES_OPEN)].rstrip(b",\n") + b"}")
    except orjson.JSONDecodeError:
        return None
    if type(header) is not dict or header.get("snapshot") != index.token:
        return None
    entries, snapshot.layout.log_end = read_log(data, index.log_start)
    snapshot.layout.entries = len(entries)
    return snapshot, header, entries


def _layout(path: Path, index: Index, info: os.stat_result) -> Layout:
    return Layout(
        path=path,
        token=index.token,
        head_end=index.head_end,
        nodes_end=index.nodes_end,
        log_start=index.log_start,
        log_end=index.log_start,
        entries=0,
        inode=info.st_ino,
        size=info.st_size,
    )


def _mapped(path: Path) -> mmap.mmap | bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a file")
        try:
            return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # empty, or a file system without mmap
            return handle.read()


def read_log(data: mmap.mmap | bytes, start: int) -> tuple[list[bytes], int]:
    """The complete, intact log entries from `start`, and where the last one ends.

    Reading stops at the first line that is not a whole entry with a good checksum:
    the end of the list, or the torn tail a process killed mid-append left (that
    entry was never acknowledged).
    """
    entries: list[bytes] = []
    end = start
    at = start
    size = len(data)
    while at < size:
        newline = data.find(b"\n", at)
        line = data[at : size if newline < 0 else newline]
        body = line[:-1] if line.endswith(b",") else line
        if not _intact(body):
            break
        entries.append(bytes(body))
        end = at + len(body)
        if newline < 0:
            break
        at = newline + 1
    return entries, end


def _intact(line: bytes) -> bool:
    """A log line `{"crc":N,…}` whose CRC-32 matches the entry without its crc field."""
    if not line.startswith(b'{"crc":'):
        return False
    comma = line.find(b",", 7)
    if comma < 0 or not line[7:comma].isdigit():
        return False
    return zlib.crc32(b"{" + line[comma + 1 :]) == int(line[7:comma])


def entry_line(entry: dict[str, Any]) -> bytes:
    """A log entry as one line with its checksum in front."""
    import orjson

    body = orjson.dumps(entry)
    return b'{"crc":' + str(zlib.crc32(body)).encode() + b"," + body[1:]


def decode_entry(line: bytes) -> dict[str, Any]:
    import orjson

    entry = orjson.loads(line)
    if type(entry) is not dict:
        raise ValueError("a log entry is not an object")
    return entry


class IndexedNodes(MutableMapping[str, Record]):
    """The nodes of an indexed document: read from the file on first use.

    Behaves as the dict of records it stands for. Records read to be changed are held
    in `cache` (records only looked at are not kept: `peek`); `gone` are snapshot ids
    removed since, `extra` ids that are not in the snapshot.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.index = snapshot.index
        self.cache: dict[str, Record] = {}
        self.gone: set[str] = set()
        self.extra: dict[str, None] = {}  # insertion-ordered
        self.entries: dict[str, int] = {}  # index entries of ids met on paths
        self.recent: dict[str, Record] = {}  # the last few records only looked at
        # Entries the index no longer tells the truth about (held in the cache, where
        # they may change, or removed): walks ask the cache there.
        self.touched: set[int] = set()

    def entry(self, key: str) -> int:
        """The index entry of a snapshot id (KeyError if it is not one, or was removed)."""
        entry = self.entries.get(key)
        if entry is None:
            if key in self.gone or type(key) is not str:
                raise KeyError(key)
            entry = self.index.find(key)
            if entry < 0:
                raise KeyError(key)
        return entry

    def __getitem__(self, key: str) -> Record:
        rec = self.cache.get(key)
        if rec is not None:
            return rec
        entry = self.entry(key)
        rec = self.recent.pop(key, None) or self.snapshot.record_at(entry, key)
        self.cache[key] = rec
        self.touched.add(entry)
        return rec

    def peek(self, key: str) -> Record:
        """The record, to read only (a change to it would be lost): not kept beyond the last
        few, so a walk over a million nodes holds few (a node with 100k children is read
        once however often it is looked at)."""
        rec = self.cache.get(key) or self.recent.get(key)
        if rec is not None:
            return rec
        rec = self.snapshot.record_at(self.entry(key), key)
        recent = self.recent
        if len(recent) >= RECENT:
            del recent[next(iter(recent))]
        recent[key] = rec
        return rec

    def path_ids(self, node_id: str) -> list[str]:
        """Ids from the root down to `node_id`, through the index's parent links where the
        records are unchanged: no record is read (see Document.path_ids)."""
        cache, index, entries, touched = self.cache, self.index, self.entries, self.touched
        parents, count = index.parents, index.count  # NONE and UNKNOWN are past count
        limit = len(self)
        out: list[str] = []
        current: str | None = node_id
        while current is not None:
            rec = cache.get(current)
            if rec is not None:
                out.append(current)
                current = rec.get("parent")
            else:
                # Up through untouched records by entry alone, naming them at the end.
                entry = self.entry(current)
                run = [entry]
                parent = parents[entry]
                while parent < count and parent not in touched and len(run) <= limit:
                    run.append(parent)
                    parent = parents[parent]
                ids = index.ids_at(run)
                entries.update(zip(ids, run, strict=True))
                out.extend(ids)
                if parent == NONE:
                    current = None
                elif parent == UNKNOWN:
                    current = self.snapshot.record_at(run[-1], ids[-1]).get("parent")
                else:
                    current = index.id_at(parent)
            if len(out) > limit:
                raise DocumentError(f"the parent links of node {node_id!r} form a cycle")
        out.reverse()
        return out

    def field(self, key: str, name: str) -> Any:
        """One field of a record, from the index when the record is untouched and the field
        is one it holds (parent, last_child, archived, visited): no record is read."""
        rec = self.cache.get(key)
        if rec is not None:
            return rec.get(name)
        entry = self.entry(key)
        index = self.index
        if name in ("parent", "last_child"):
            link = (index.parents if name == "parent" else index.last_children)[entry]
            if link == NONE:
                return None
            if link != UNKNOWN:
                return index.id_at(link)
        elif name in ("archived", "visited"):
            bit = ARCHIVED if name == "archived" else VISITED
            return True if index.flags[entry] & bit else None
        return self.snapshot.record_at(entry, key).get(name)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        if key in self.cache:
            return True
        return type(key) is str and key not in self.gone and self.index.find(key) >= 0

    def __setitem__(self, key: str, rec: Record) -> None:
        self.recent.pop(key, None)
        if key not in self:
            if key in self.gone:
                self.gone.discard(key)
            else:
                self.extra[key] = None
        if key not in self.extra:
            self.touched.add(self.index.find(key))
        self.cache[key] = rec

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self.recent.pop(key, None)
        self.cache.pop(key, None)
        if key in self.extra:
            del self.extra[key]
        else:
            self.touched.add(self.index.find(key))
            self.gone.add(key)

    def __iter__(self) -> Iterator[str]:
        index, gone, flags = self.index, self.gone, self.index.flags
        for entry in range(index.count):
            if not flags[entry] & DELETED:
                node_id = index.id_at(entry)
                if node_id not in gone:
                    yield node_id
        yield from list(self.extra)

    def __len__(self) -> int:
        return self.index.live - len(self.gone) + len(self.extra)

    def archived_flag(self, key: str) -> bool:
        """Whether the record says "archived", without parsing it when it is untouched."""
        rec = self.cache.get(key)
        if rec is not None:
            return bool(rec.get("archived"))
        return bool(self.index.flags[self.entry(key)] & ARCHIVED)

    def live_children(self, key: str) -> list[str]:
        """The children not archived (Document.live_child_ids), asking no record that is
        unchanged when the index says none of the node's children was archived."""
        kids = self.peek(key).get("children", ())
        entry = -1 if key in self.extra else self.entry(key)
        if entry >= 0 and self.index.flags[entry] & ARCHIVED_CHILD:
            flag = self.archived_flag
            return [c for c in kids if not flag(c)]
        # Only a child changed since the snapshot can have been archived since.
        cache = self.cache
        if not cache:
            return list(kids)
        return [c for c in kids if (rec := cache.get(c)) is None or not rec.get("archived")]

    def id_order(self) -> IndexedOrder:
        return IndexedOrder(self)


class IndexedOrder:
    """Sorted ids of an indexed document: the snapshot's, less the removed, plus the new."""

    def __init__(self, nodes: IndexedNodes) -> None:
        self.nodes = nodes
        self.extra = sorted(nodes.extra)

    def _at(self, position: int) -> str:
        index = self.nodes.index
        return index.id_at(index.sorted[position])

    def prefixed(self, prefix: str) -> list[str]:
        index, gone = self.nodes.index, self.nodes.gone
        out = []
        position = index.bisect(prefix)
        while position < index.live:
            node_id = self._at(position)
            if not node_id.startswith(prefix):
                break
            if node_id not in gone:
                out.append(node_id)
            position += 1
        i = bisect.bisect_left(self.extra, prefix)
        while i < len(self.extra) and self.extra[i].startswith(prefix):
            out.append(self.extra[i])
            i += 1
        return sorted(out)

    def neighbours(self, node_id: str) -> list[str]:
        index, gone = self.nodes.index, self.nodes.gone
        below: list[str] = []
        above: list[str] = []
        position = index.bisect(node_id)
        i = position - 1
        while i >= 0 and not below:
            candidate = self._at(i)
            if candidate not in gone:
                below.append(candidate)
            i -= 1
        i = position
        while i < index.live and not above:
            candidate = self._at(i)
            if candidate != node_id and candidate not in gone:
                above.append(candidate)
            i += 1
        j = bisect.bisect_left(self.extra, node_id)
        if j > 0:
            below.append(self.extra[j - 1])
        after = j + 1 if j < len(self.extra) and self.extra[j] == node_id else j
        if after < len(self.extra):
            above.append(self.extra[after])
        return ([max(below)] if below else []) + ([min(above)] if above else [])


# ---- writing --------------------------------------------------------------------------------


def write(
    path: Path,
    header: dict[str, Any],
    nodes: MutableMapping[str, Record],
    *,
    before_replace: Callable[[], None] | None = None,
) -> None:
    """Write a whole document in the indexed layout, and its index (see the module doc).

    A document read from an indexed file is rewritten by copying the unchanged records'
    bytes as they are, file to file, and patching a copy of the index: the cost in
    Python is the changes', the rest is the kernel copying bytes. Anything else (or an
    index with too many holes) is written and indexed afresh. The index is written once
    the new file is durable and before it replaces the document, so a crash leaves the
    old file (whose index no longer matches: it is then read whole) or the new one with
    its index.
    """
    import orjson

    token = os.urandom(8).hex()
    fields = {k: v for k, v in header.items() if k not in ("nodes", "log", "snapshot")}
    fields["snapshot"] = token
    head = orjson.dumps(fields)[:-1] + b"," + NODES_OPEN
    index: list[bytes] = []
    if isinstance(nodes, IndexedNodes) and not _too_holed(nodes):
        writer: Any = _Patched(nodes, head, token, index)
    else:
        writer = _Fresh(nodes, head, token, index)

    def then() -> None:
        files.write_atomic(index_path(path), index[0], failure="cannot save its index")
        if before_replace is not None:
            before_replace()

    files.write_atomic(
        path,
        writer.write,
        before_replace=then,
        failure="cannot save",
        note="; the document on disk is unchanged",
    )


def _too_holed(nodes: IndexedNodes) -> bool:
    old = nodes.index
    holes = old.count - old.live + len(nodes.gone)
    return holes * HOLES_SHARE > old.count + len(nodes.extra)


def _flags_of(rec: Record) -> int:
    return (ARCHIVED if rec.get("archived") else 0) | (VISITED if rec.get("visited") else 0)


class _Output:
    """The new file, written through a descriptor, and where its bytes go."""

    def __init__(self, fd: int, head: bytes) -> None:
        self.fd = fd
        self.position = 0
        self.records = 0
        self.put(head)

    def put(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
            self.position += written

    def record(self, node_id: str, raw: bytes) -> int:
        """Write one record line; returns the offset of its JSON object."""
        import orjson

        self.put((b",\n" if self.records else b"") + orjson.dumps(node_id) + b":")
        self.records += 1
        offset = self.position
        self.put(raw)
        return offset

    def copy(self, source: int, start: int, size: int) -> int:
        """Copy whole record lines from another file; returns how far their offsets move."""
        if self.records:
            self.put(b",\n")
        delta = self.position - start
        done = 0
        while done < size:  # in the kernel where it can, without passing through here
            try:
                done += os.copy_file_range(source, self.fd, size - done, start + done)
            except (AttributeError, OSError):
                chunk = os.pread(source, min(size - done, 1 << 22), start + done)
                self.put(chunk)
                self.position -= len(chunk)  # counted below with the rest
                done += len(chunk)
        self.position += size
        self.records += 1  # at least one: what follows needs a separator
        return delta

    def close(self) -> tuple[int, int]:
        """End the nodes and open an empty log; returns (nodes_end, log_start)."""
        nodes_end = self.position + 1  # after the newline that ends the last record
        self.put(b"\n" + NODES_CLOSE + TAIL[1:])  # an empty log: "]}\n"
        return nodes_end, nodes_end + len(NODES_CLOSE)


class _Fresh:
    """A document written and indexed from scratch: every record dumped, ids sorted and
    hashed (the first save of a large document, or an index grown too full of holes)."""

    def __init__(
        self, nodes: MutableMapping[str, Record], head: bytes, token: str, index: list[bytes]
    ) -> None:
        self.nodes, self.head, self.token, self.index = nodes, head, token, index

    def write(self, fd: int) -> None:
        import orjson

        out = _Output(fd, self.head)
        ids: list[str] = []
        offsets, lengths, crcs = array("Q"), array("I"), array("I")
        flags = bytearray()
        links: list[tuple[Any, Any]] = []
        peek = getattr(self.nodes, "peek", self.nodes.__getitem__)
        for node_id in self.nodes:
            rec = peek(node_id)
            raw = orjson.dumps(rec)
            ids.append(node_id)
            offsets.append(out.record(node_id, raw))
            lengths.append(len(raw))
            crcs.append(zlib.crc32(raw))
            flags.append(_flags_of(rec))
            links.append((rec.get("parent"), rec.get("last_child")))
        nodes_end, log_start = out.close()
        where = {node_id: entry for entry, node_id in enumerate(ids)}
        parents = array("I", [NONE if p is None else where.get(p, UNKNOWN) for p, _ in links])
        lasts = array("I", [NONE if c is None else where.get(c, UNKNOWN) for _, c in links])
        del where, links
        _mark_archived_children(flags, parents, range(len(ids)))
        keys = [node_id.encode() for node_id in ids]
        ordered = array("I", sorted(range(len(keys)), key=keys.__getitem__))
        self.index.append(
            _encode(
                self.token,
                self.head,
                nodes_end,
                log_start,
                keys,
                [offsets, lengths, crcs, flags, parents, lasts],
                ordered,
                _table(keys, range(len(keys)), len(keys)),
                len(keys),
            )
        )


class _Patched:
    """A document read from an indexed file, written by copying its unchanged records'
    bytes and patching a copy of its index: entries keep their numbers, a removed node
    leaves a DELETED hole, a new one is added at the end."""

    def __init__(self, nodes: IndexedNodes, head: bytes, token: str, index: list[bytes]) -> None:
        self.nodes, self.head, self.token, self.index = nodes, head, token, index

    def write(self, fd: int) -> None:
        import orjson

        nodes, old = self.nodes, self.nodes.index
        cache, snapshot = nodes.cache, nodes.snapshot
        gone = {old.find(node_id) for node_id in nodes.gone}
        changed = sorted(e for e in nodes.touched | gone if e >= 0)
        extra = list(nodes.extra)
        numbers = {node_id: old.count + i for i, node_id in enumerate(extra)}

        def entry_of(node_id: Any) -> int:
            if node_id is None:
                return NONE
            found = numbers.get(node_id)
            if found is None:
                found = old.find(node_id) if type(node_id) is str else -1
            return UNKNOWN if found < 0 or found in gone else found

        out = _Output(fd, self.head)
        offsets, lengths, crcs = array("Q"), array("I"), array("I")
        flags = bytearray()
        parents, lasts = array("I"), array("I")
        written: list[tuple[int, Record]] = []  # entries written from records, to link below

        def copy_run(start: int, stop: int) -> None:
            """Entries start..stop-1, unchanged: their lines copied as one block."""
            first = _first_live(old, start, stop)
            delta = 0
            if first >= 0:  # else only holes
                last = _last_live(old, start, stop)
                begin = old.offsets[first] - len(orjson.dumps(old.id_at(first))) - 1
                end = old.offsets[last] + old.lengths[last]
                delta = out.copy(snapshot.fd, begin, end - begin)
            offsets.extend(o + delta if o else 0 for o in old.offsets[start:stop])
            for target, source in (
                (lengths, old.lengths),
                (crcs, old.crcs),
                (parents, old.parents),
                (lasts, old.last_children),
            ):
                target.frombytes(source[start:stop].tobytes())
            flags.extend(old.flags[start:stop])

        def put(entry: int, node_id: str, rec: Record, kept: int) -> None:
            raw = orjson.dumps(rec)
            offsets.append(out.record(node_id, raw))
            lengths.append(len(raw))
            crcs.append(zlib.crc32(raw))
            flags.append(_flags_of(rec) | kept)
            parents.append(NONE)
            lasts.append(NONE)
            written.append((entry, rec))

        at = 0
        for entry in changed:
            if at < entry:
                copy_run(at, entry)
            if entry in gone:
                offsets.append(0)
                lengths.append(0)
                crcs.append(0)
                flags.append(DELETED)
                parents.append(NONE)
                lasts.append(NONE)
            else:
                node_id = old.id_at(entry)
                put(entry, node_id, cache[node_id], old.flags[entry] & ARCHIVED_CHILD)
            at = entry + 1
        if at < old.count:
            copy_run(at, old.count)
        for node_id in extra:
            put(numbers[node_id], node_id, cache[node_id], 0)
        nodes_end, log_start = out.close()
        for entry, rec in written:
            parents[entry] = entry_of(rec.get("parent"))
            lasts[entry] = entry_of(rec.get("last_child"))
        _mark_archived_children(flags, parents, [entry for entry, _ in written])
        count = old.count + len(extra)
        new_keys = [node_id.encode() for node_id in extra]
        keys = _Keys(old, new_keys)
        gone_or_dead = gone
        ordered = _merged(old, keys, gone_or_dead, list(numbers.values()))
        if 2 * count > old.mask + 1:  # too full for open addressing: a bigger table
            table = _table(keys, ordered, count)
        else:
            table = array("I")
            table.frombytes(old.table.tobytes())
            _insert(table, keys, numbers.values())
        self.index.append(
            _encode(
                self.token,
                self.head,
                nodes_end,
                log_start,
                keys,
                [offsets, lengths, crcs, flags, parents, lasts],
                ordered,
                table,
                len(ordered),
            )
        )


def _first_live(old: Index, start: int, stop: int) -> int:
    return next((e for e in range(start, stop) if not old.flags[e] & DELETED), -1)


def _last_live(old: Index, start: int, stop: int) -> int:
    return next(e for e in range(stop - 1, start - 1, -1) if not old.flags[e] & DELETED)


def _mark_archived_children(flags: bytearray, parents: Any, entries: Iterable[int]) -> None:
    """Flag the parents of archived entries: their children must be looked at one by one."""
    for entry in entries:
        if flags[entry] & ARCHIVED and not flags[entry] & DELETED:
            parent = parents[entry]
            if parent < len(flags):
                flags[parent] |= ARCHIVED_CHILD


class _Keys:
    """The ids of a patched index's entries: the old index's, then the new ones."""

    def __init__(self, old: Index, new: list[bytes]) -> None:
        self.old, self.new, self.count = old, new, old.count

    def __getitem__(self, entry: int) -> bytes:
        return self.old.key(entry) if entry < self.count else self.new[entry - self.count]

    def __len__(self) -> int:
        return self.count + len(self.new)


def _merged(old: Index, keys: _Keys, gone: set[int], new: list[int]) -> array[int]:
    """The live entries in id order: the old order less `gone`, with `new` merged in."""
    ordered = array("I")
    ordered.frombytes(old.sorted.tobytes())
    if gone:
        ordered = array("I", [e for e in ordered if e not in gone])
    if not new:
        return ordered
    new.sort(key=keys.__getitem__)
    if len(new) <= 64:  # a few: placed by bisection
        for entry in new:
            key = keys[entry]
            lo, hi = 0, len(ordered)
            while lo < hi:
                mid = (lo + hi) // 2
                if keys[ordered[mid]] < key:
                    lo = mid + 1
                else:
                    hi = mid
            ordered.insert(lo, entry)
        return ordered
    merged = array("I")
    i = j = 0
    while i < len(ordered) and j < len(new):
        if keys[ordered[i]] <= keys[new[j]]:
            merged.append(ordered[i])
            i += 1
        else:
            merged.append(new[j])
            j += 1
    merged.extend(ordered[i:])
    merged.extend(array("I", new[j:]))
    return merged


def _table(keys: Any, entries: Iterable[int], count: int) -> array[int]:
    """An open-addressing hash table of `entries` + 1, at most half full."""
    bits = max(4, (2 * count).bit_length())
    table = array("I", bytes(4 << bits))
    _insert(table, keys, entries)
    return table


def _insert(table: array[int], keys: Any, entries: Iterable[int]) -> None:
    mask = len(table) - 1
    crc32 = zlib.crc32
    for entry in entries:
        slot = crc32(keys[entry]) & mask
        while table[slot]:
            slot = (slot + 1) & mask
        table[slot] = entry + 1


def _encode(
    token: str,
    head: bytes,
    nodes_end: int,
    log_start: int,
    keys: Any,
    columns: list[Any],
    ordered: array[int],
    table: array[int],
    live: int,
) -> bytes:
    """The bytes of an index (see Index for the layout)."""
    count = len(keys)
    if (
        isinstance(keys, _Keys)
        and keys.old.width
        and all(len(k) == keys.old.width for k in keys.new)
    ):
        width = keys.old.width  # the old ids as they are, the new ones after them
        at = keys.old.blob_at
        blob = bytes(keys.old.buffer[at : at + keys.old.blob_len]) + b"".join(keys.new)
    else:
        every = [keys[e] for e in range(count)]
        widths = {len(k) for k in every}
        width = widths.pop() if len(widths) == 1 else 0
        blob = b"".join(every)
    ends = array("I")
    if not width:
        total = 0
        for e in range(count):
            total += len(keys[e])
            ends.append(total)
    offsets, lengths, crcs, flags, parents, lasts = columns
    body = b"".join(
        [
            _padded(blob),
            _padded(ends.tobytes()),
            offsets.tobytes(),
            _padded(lengths.tobytes()),
            _padded(crcs.tobytes()),
            _padded(bytes(flags)),
            _padded(parents.tobytes()),
            _padded(lasts.tobytes()),
            _padded(ordered.tobytes()),
            table.tobytes(),
        ]
    )
    bits = (len(table) - 1).bit_length()
    fields = (MAGIC, token.encode("ascii"), count, live, bits, width, len(head), nodes_end)
    checks = (log_start, len(blob), zlib.crc32(head), zlib.crc32(body))
    return _HEAD.pack(*fields, *checks) + body


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (_pad(len(data)) - len(data))


def append(layout: Layout, line: bytes) -> Layout:
    """Append one log entry (`entry_line`) to the file in place, durably; returns the new layout.

    The bytes after the last complete entry (the closing `]}` or a torn tail left by a
    killed process) are overwritten. If the write fails, the closing is put back, so the
    file still reads as it did.
    """
    chunk = (b",\n" if layout.entries else b"") + line
    path = layout.path
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        raise StorageError(f"{path}: cannot save ({files.reason(exc)})") from None
    try:
        try:
            end = layout.log_end + len(chunk) + len(TAIL)
            _write_at(fd, chunk + TAIL, layout.log_end)
            if layout.size > end:  # a torn tail longer than this entry: cut what is left of it
                os.ftruncate(fd, end)
            os.fsync(fd)
        except OSError as exc:
            try:  # back to the bytes the file ended with
                os.ftruncate(fd, layout.log_end)
                _write_at(fd, TAIL if layout.entries else TAIL[1:], layout.log_end)
                os.fsync(fd)
            except OSError:
                pass  # a torn tail reads as the document before this save
            raise StorageError(
                f"{path}: cannot save ({files.reason(exc)}); the document on disk is unchanged"
            ) from None
        info = os.fstat(fd)
    finally:
        os.close(fd)
    end = layout.log_end + len(chunk)
    return Layout(
        path=path,
        token=layout.token,
        head_end=layout.head_end,
        nodes_end=layout.nodes_end,
        log_start=layout.log_start,
        log_end=end,
        entries=layout.entries + 1,
        inode=info.st_ino,
        size=info.st_size,
    )


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        if hasattr(os, "pwrite"):
            written = os.pwrite(fd, view, offset)
        else:  # pragma: no cover - Windows
            os.lseek(fd, offset, os.SEEK_SET)
            written = os.write(fd, view)
        view = view[written:]
        offset += written
