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
order (docs/schema.md, "Large documents"). Beside the file, `.NAME.idx` maps every
node id to the bytes of its record and their checksum, so a command parses the
header, the log and only the records it touches (`IndexedNodes`), and a save
appends one entry, in place, costing what changed (`append`). When the log has
grown past a fraction of the snapshot, the store rewrites the file whole with a
fresh token and index (`write`), keeping the file one that any JSON tool reads.

The index is derived data: missing, stale or damaged, it is ignored (the file is
then read whole) and rebuilt by the next full save. Records and log entries carry
CRC-32 checksums, so damage shows as a clean "damaged document" error.
"""

from __future__ import annotations

import bisect
import mmap
import os
import stat
import struct
import sys
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
MAGIC = b"LOOMIX1" + (b"L" if sys.byteorder == "little" else b"B")
NODES_OPEN = b'"nodes":{\n'  # the header region ends with this
NODES_CLOSE = b'},\n"log":[\n'  # between the last record and the first log entry
TAIL = b"\n]}\n"  # after the last log entry
_HEAD = struct.Struct("<8s16sQQQQQQQII")  # see Index
ARCHIVED = 1  # flag bits: what the record says, readable without parsing it
VISITED = 2
ARCHIVED_CHILD = 4  # some child of this node was archived when the snapshot was written
NONE = 0xFFFFFFFF  # no parent, no last child
UNKNOWN = 0xFFFFFFFE  # a last child that names no node: read the record


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
    """The `.idx` file of a snapshot: ids in sorted order, a hash table, record offsets, and
    the links a walk up the tree needs, so that walking reads no record.

    Layout (the machine's byte order, every array 8-byte aligned): a header (`_HEAD`,
    ending with the CRC-32 of the document's header region and that of the rest of
    the index), the ids joined in sorted order (each `width` bytes, or ended
    by `ends` when their lengths differ), then per sorted position: its record's
    offset (u64), length (u32), CRC-32 (u32) and flags (u8: ARCHIVED, VISITED,
    ARCHIVED_CHILD); its
    parent's and its last child's sorted positions (u32; NONE, or UNKNOWN for a last
    child that names no node); the sorted position of each record in file order
    (u32); and an open-addressing hash table of sorted positions + 1 (u32, keyed by
    the CRC-32 of the id).
    """

    def __init__(self, buffer: Any) -> None:
        (
            magic,
            token,
            self.count,
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
        n = self.count
        at = _HEAD.size
        self.blob_at = at
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
        self.file_order = self._array(at, "I", n)
        at += _pad(4 * n)
        self.mask = (1 << bits) - 1
        self.table = self._array(at, "I", 1 << bits)
        if at + 4 * (1 << bits) > len(buffer):
            raise ValueError("index is truncated")

    def _array(self, at: int, code: str, n: int) -> memoryview:
        size = struct.calcsize(code)
        return memoryview(self.buffer)[at : at + size * n].cast(code)  # type: ignore[call-overload]

    def key(self, pos: int) -> bytes:
        """The id at a sorted position, as bytes."""
        at, width = self.blob_at, self.width
        if width:
            start = at + pos * width
            return bytes(self.buffer[start : start + width])
        ends = self.ends
        return bytes(self.buffer[at + (ends[pos - 1] if pos else 0) : at + ends[pos]])

    def id_at(self, pos: int) -> str:
        return self.key(pos).decode()

    def ids_at(self, positions: Iterable[int]) -> list[str]:
        """The ids at many sorted positions (a path up the tree), decoded in one go."""
        width = self.width
        if not width:
            return [self.id_at(pos) for pos in positions]
        buffer, at = self.buffer, self.blob_at
        return [buffer[at + p * width : at + p * width + width].decode() for p in positions]

    def find(self, node_id: str) -> int:
        """The sorted position of `node_id`, or -1."""
        key = node_id.encode()
        mask, table, key_at = self.mask, self.table, self.key
        slot = zlib.crc32(key) & mask
        while True:
            entry = table[slot]
            if not entry:
                return -1
            if key_at(entry - 1) == key:
                return entry - 1
            slot = (slot + 1) & mask

    def bisect(self, node_id: str) -> int:
        """Where `node_id` is or would be in sorted order."""
        key = node_id.encode()
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self.key(mid) < key:
                lo = mid + 1
            else:
                hi = mid
        return lo


def _pad(n: int) -> int:
    return (n + 7) & ~7


class Snapshot:
    """An open indexed document file: its bytes (mapped) and their index."""

    def __init__(self, layout: Layout, data: mmap.mmap | bytes, index: Index, shown: str) -> None:
        self.layout = layout
        self.data = data
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
        for pos in range(self.index.count):
            self.raw_at(pos)

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
        return None
    finally:
        os.close(fd)
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
    entries, log_end = read_log(data, index.log_start)
    layout = Layout(
        path=path,
        token=index.token,
        head_end=index.head_end,
        nodes_end=index.nodes_end,
        log_start=index.log_start,
        log_end=log_end,
        entries=len(entries),
        inode=info.st_ino,
        size=info.st_size,
    )
    return Snapshot(layout, data, index, shown), header, entries


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
    """The nodes of an indexed document: read from the file on first use, then kept.

    Behaves as the dict of records it stands for. Records read or written are held in
    `cache`; `gone` are snapshot ids removed since, `extra` ids that are not in it.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.index = snapshot.index
        self.cache: dict[str, Record] = {}
        self.gone: set[str] = set()
        self.extra: dict[str, None] = {}  # insertion-ordered
        self.positions: dict[str, int] = {}  # sorted positions of ids met on paths
        # Snapshot positions whose index entry no longer tells the truth (read into the
        # cache, where they may change, or removed): walks ask the cache there.
        self.touched: set[int] = set()

    def position(self, key: str) -> int:
        """The sorted position of a snapshot id (KeyError if it is not one, or was removed)."""
        pos = self.positions.get(key)
        if pos is None:
            if key in self.gone or type(key) is not str:
                raise KeyError(key)
            pos = self.index.find(key)
            if pos < 0:
                raise KeyError(key)
        return pos

    def __getitem__(self, key: str) -> Record:
        rec = self.cache.get(key)
        if rec is not None:
            return rec
        pos = self.position(key)
        rec = self.snapshot.record_at(pos, key)
        self.cache[key] = rec
        self.touched.add(pos)
        return rec

    def peek(self, key: str) -> Record:
        """The record, without keeping it: for reading only (a change to it would be lost)."""
        rec = self.cache.get(key)
        if rec is not None:
            return rec
        return self.snapshot.record_at(self.position(key), key)

    def path_ids(self, node_id: str) -> list[str]:
        """Ids from the root down to `node_id`, through the index's parent links where the
        records are unchanged: no record is read (see Document.path_ids)."""
        cache, index, positions, touched = self.cache, self.index, self.positions, self.touched
        parents = index.parents
        limit = len(self)
        out: list[str] = []
        current: str | None = node_id
        while current is not None:
            rec = cache.get(current)
            if rec is not None:
                out.append(current)
                current = rec.get("parent")
            else:
                # Up through untouched records by position alone, naming them at the end.
                pos = self.position(current)
                run = [pos]
                parent = parents[pos]
                count = index.count  # NONE and UNKNOWN are past it
                while parent < count and parent not in touched and len(run) <= limit:
                    run.append(parent)
                    parent = parents[parent]
                ids = index.ids_at(run)
                positions.update(zip(ids, run, strict=True))
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
        pos = self.position(key)
        index = self.index
        if name in ("parent", "last_child"):
            link = (index.parents if name == "parent" else index.last_children)[pos]
            if link == NONE:
                return None
            if link != UNKNOWN:
                return index.id_at(link)
        elif name in ("archived", "visited"):
            return (
                True if index.flags[pos] & (ARCHIVED if name == "archived" else VISITED) else None
            )
        return self.snapshot.record_at(pos, key).get(name)

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
        self.cache.pop(key, None)
        if key in self.extra:
            del self.extra[key]
        else:
            self.touched.add(self.index.find(key))
            self.gone.add(key)

    def __iter__(self) -> Iterator[str]:
        index, gone = self.index, self.gone
        for pos in index.file_order:
            node_id = index.id_at(pos)
            if node_id not in gone:
                yield node_id
        yield from list(self.extra)

    def __len__(self) -> int:
        return self.index.count - len(self.gone) + len(self.extra)

    def archived_flag(self, key: str) -> bool:
        """Whether the record says "archived", without parsing it when it is untouched."""
        rec = self.cache.get(key)
        if rec is not None:
            return bool(rec.get("archived"))
        return bool(self.index.flags[self.position(key)] & ARCHIVED)

    def live_children(self, key: str) -> list[str]:
        """The children not archived (Document.live_child_ids), asking no record that is
        unchanged when the index says none of the node's children was archived."""
        kids = self.peek(key).get("children", ())
        pos = -1 if key in self.extra else self.position(key)
        if pos >= 0 and self.index.flags[pos] & ARCHIVED_CHILD:
            flag = self.archived_flag
            return [c for c in kids if not flag(c)]
        # Only a child changed since the snapshot can have been archived since.
        cache = self.cache
        if not cache:
            return list(kids)
        return [c for c in kids if (rec := cache.get(c)) is None or not rec.get("archived")]

    def id_order(self) -> IndexedOrder:
        return IndexedOrder(self)

    def records(self) -> Iterator[tuple[str, bytes | Record, int, int]]:
        """Every record in file order, with its position in this snapshot (-1 for a new one):
        the snapshot's bytes and flags when untouched, else the dict (flags -1)."""
        index, gone, cache = self.index, self.gone, self.cache
        for pos in index.file_order:
            node_id = index.id_at(pos)
            if node_id in gone:
                continue
            rec = cache.get(node_id)
            if rec is None:
                yield node_id, self.snapshot.raw_at(pos), index.flags[pos], pos
            else:
                yield node_id, rec, -1, pos
        for node_id in list(self.extra):
            yield node_id, cache[node_id], -1, -1


class IndexedOrder:
    """Sorted ids of an indexed document: the snapshot's, less the removed, plus the new."""

    def __init__(self, nodes: IndexedNodes) -> None:
        self.nodes = nodes
        self.extra = sorted(nodes.extra)

    def prefixed(self, prefix: str) -> list[str]:
        index, gone = self.nodes.index, self.nodes.gone
        out = []
        pos = index.bisect(prefix)
        while pos < index.count:
            node_id = index.id_at(pos)
            if not node_id.startswith(prefix):
                break
            if node_id not in gone:
                out.append(node_id)
            pos += 1
        i = bisect.bisect_left(self.extra, prefix)
        while i < len(self.extra) and self.extra[i].startswith(prefix):
            out.append(self.extra[i])
            i += 1
        return sorted(out)

    def neighbours(self, node_id: str) -> list[str]:
        index, gone = self.nodes.index, self.nodes.gone
        below: list[str] = []
        above: list[str] = []
        pos = index.bisect(node_id)
        i = pos - 1
        while i >= 0 and not below:
            candidate = index.id_at(i)
            if candidate not in gone:
                below.append(candidate)
            i -= 1
        i = pos
        while i < index.count and not above:
            candidate = index.id_at(i)
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
    records: Iterable[tuple[str, bytes | Record, int, int]],
    *,
    previous: Index | None = None,
    before_replace: Any = None,
) -> None:
    """Write a whole document in the indexed layout, and its index (see the module doc).

    `records` gives each node's record as a dict (flags -1), or as the exact bytes of an
    unchanged one from the `previous` snapshot with its flags; with its position there
    (or -1). The file is streamed to a temp file; its index is written once that is
    durable and before it replaces the document, so a crash leaves the old file (whose
    index no longer matches: it is then read whole) or the new one with its index.
    """
    import orjson

    token = os.urandom(8).hex()
    head_fields = {k: v for k, v in header.items() if k not in ("nodes", "log", "snapshot")}
    head_fields["snapshot"] = token
    head = orjson.dumps(head_fields)[:-1] + b"," + NODES_OPEN
    table = _Table(previous)
    ends: list[int] = []  # [nodes_end, log_start], once streamed

    def stream() -> Iterator[bytes]:
        dumps = orjson.dumps
        position = len(head)
        batch = [head]
        held = 0
        for count, (node_id, rec, flag, old) in enumerate(records):
            raw = rec if type(rec) is bytes else dumps(rec)
            key = dumps(node_id) + b":"
            sep = b",\n" if count else b""
            position += len(sep) + len(key)
            table.add(node_id, position, raw, flag, old, rec if type(rec) is dict else None)
            piece = sep + key + raw
            batch.append(piece)
            held += len(piece)
            position += len(raw)
            if held >= 1 << 20:
                yield b"".join(batch)
                batch, held = [], 0
        nodes_end = position + 1  # after the newline that ends the last record
        ends.extend([nodes_end, nodes_end + len(NODES_CLOSE)])
        batch.append(b"\n" + NODES_CLOSE + TAIL[1:])  # an empty log: "]}\n"
        yield b"".join(batch)

    def index_then(after: Any) -> None:
        files.write_atomic(
            index_path(path), table.encode(token, head, *ends), failure="cannot save its index"
        )
        if after is not None:
            after()

    files.write_atomic(
        path,
        stream(),
        before_replace=lambda: index_then(before_replace),
        failure="cannot save",
        note="; the document on disk is unchanged",
    )


class _Table:
    """The index of a snapshot being written, record by record, then encoded."""

    def __init__(self, previous: Index | None) -> None:
        self.previous = previous
        self.ids: list[str] = []
        self.offsets = array("Q")
        self.lengths = array("I")
        self.crcs = array("I")
        self.flags = bytearray()
        self.olds = array("i")  # position in the previous index, or -1
        self.links: dict[int, tuple[Any, Any]] = {}  # record number → (parent, last child) ids

    def add(
        self, node_id: str, offset: int, raw: bytes, flag: int, old: int, rec: Record | None
    ) -> None:
        number = len(self.ids)
        self.ids.append(node_id)
        self.offsets.append(offset)
        self.lengths.append(len(raw))
        self.crcs.append(zlib.crc32(raw))
        self.olds.append(old)
        if rec is not None:
            flag = (ARCHIVED if rec.get("archived") else 0) | (VISITED if rec.get("visited") else 0)
            self.links[number] = (rec.get("parent"), rec.get("last_child"))
        self.flags.append(flag)

    def encode(self, token: str, head: bytes, nodes_end: int, log_start: int) -> bytes:
        ids, n = self.ids, len(self.ids)
        order = sorted(range(n), key=ids.__getitem__)
        keys = [ids[i].encode() for i in order]
        widths = {len(k) for k in keys}
        width = widths.pop() if len(widths) == 1 else 0
        blob = b"".join(keys)
        ends = array("I")
        if not width:
            total = 0
            for key in keys:
                total += len(key)
                ends.append(total)
        new_of = array("I", bytes(4 * n))  # record number → sorted position
        for pos, i in enumerate(order):
            new_of[i] = pos
        parents, last_children = self._links(order, new_of)
        flags = bytearray(self.flags[i] & (ARCHIVED | VISITED) for i in order)
        for pos in range(n):
            if flags[pos] & ARCHIVED and parents[pos] != NONE and parents[pos] != UNKNOWN:
                flags[parents[pos]] |= ARCHIVED_CHILD
        file_order = array("I", [new_of[i] for i in range(n)])
        bits = max(4, (2 * n).bit_length())
        mask = (1 << bits) - 1
        table = array("I", bytes(4 << bits))
        crc32 = zlib.crc32
        for pos, key in enumerate(keys):
            slot = crc32(key) & mask
            while table[slot]:
                slot = (slot + 1) & mask
            table[slot] = pos + 1
        body = b"".join(
            [
                _padded(blob),
                _padded(ends.tobytes()),
                array("Q", [self.offsets[i] for i in order]).tobytes(),
                _padded(array("I", [self.lengths[i] for i in order]).tobytes()),
                _padded(array("I", [self.crcs[i] for i in order]).tobytes()),
                _padded(bytes(flags)),
                _padded(parents.tobytes()),
                _padded(last_children.tobytes()),
                _padded(file_order.tobytes()),
                table.tobytes(),
            ]
        )
        fields = (MAGIC, token.encode("ascii"), n, bits, width, len(head), nodes_end, log_start)
        checks = (len(blob), zlib.crc32(head), zlib.crc32(body))
        return _HEAD.pack(*fields, *checks) + body

    def _links(self, order: list[int], new_of: array[int]) -> tuple[array[int], array[int]]:
        """Parent and last-child positions, in sorted order: carried over from the previous
        index for unchanged records, looked up by id for the others."""
        previous, olds, links = self.previous, self.olds, self.links
        # Previous position → new one; UNKNOWN for a node no longer there.
        moved = array("I", [UNKNOWN]) * (previous.count if previous is not None else 0)
        for number, old in enumerate(olds):
            if old >= 0:
                moved[old] = new_of[number]
        where: dict[str, int] | None = None
        parents = array("I", [NONE]) * len(order)
        last_children = array("I", [NONE]) * len(order)
        for pos, number in enumerate(order):
            old = olds[number]
            if number not in links and previous is not None and old >= 0:
                parent, last = previous.parents[old], previous.last_children[old]
                parents[pos] = NONE if parent == NONE else moved[parent]
                last_children[pos] = last if last in (NONE, UNKNOWN) else moved[last]
                continue
            if where is None:
                where = {node_id: new_of[i] for i, node_id in enumerate(self.ids)}
            parent, last = links[number]
            parents[pos] = NONE if parent is None else where.get(parent, NONE)
            last_children[pos] = NONE if last is None else where.get(last, UNKNOWN)
        return parents, last_children


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
            _write_at(fd, chunk + TAIL, layout.log_end)
            os.ftruncate(fd, layout.log_end + len(chunk) + len(TAIL))
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
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
