"""A branch as a plain file: edits made in any editor become tree operations.

`sync(document, file)` keeps a text file and the document's current branch in step.
The document remembers, per file (the header field `sync`, see docs/schema.md), the
node whose branch the file was last written from or read as, with the SHA-256 of
that branch's text and of the file's bytes: so a sync knows whether the file, the
tree, or both changed since.

The file's edits are diffed against the branch it was written from, then applied
through `loom.ops` in one journal transaction (one undoable step), never rewriting
text a node's descendants inherit:
- text added at the end becomes a new `human` child;
- an edit inside earlier segments becomes a new branch beside the first changed
  node, the later segments carried along (copy-on-write), and the old branch stays;
- text deleted at the end makes the branch end at a new version of the last kept
  node (or at that node, when the cut falls on a boundary).
Nothing is archived or purged. When the tree changed too (the cursor moved, a node
on the branch was edited elsewhere), the edits are kept as a branch that does not
become current and the file is rewritten to the current branch: neither side is lost.

The bookkeeping (`sync` in the header) is not journaled, like the cursor's moves:
after `loom undo` the next sync sees the file unchanged and the tree changed, and
rewrites the file to match.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loom import files, ops, store
from loom.document import Document, now
from loom.errors import (
    BadInput,
    DocumentError,
    InvalidOperation,
    LockTimeout,
    LoomError,
    StorageError,
)
from loom.journal import transaction

if TYPE_CHECKING:
    from loom.generation.backends import BackendPool
    from loom.generation.core import Generation
    from loom.generation.events import Sink
    from loom.generation.request import GenerationRequest

FIELD = "sync"  # the header field holding one record per synced file
RECORD_VERSION = 1
MAX_FILE_BYTES = 64 * 1024 * 1024
_RETRIES = 3  # the file changed while we worked: start again (the lock keeps the tree still)


@dataclass
class Branch:
    """The nodes from a root down to `tip` and their segments."""

    ids: list[str]
    texts: list[str]

    @property
    def tip(self) -> str | None:
        return self.ids[-1] if self.ids else None

    @property
    def text(self) -> str:
        return "".join(self.texts)


@dataclass
class Edit:
    """What `apply_edit` did: `kind` is none | append | branch | trim."""

    kind: str
    tip: str | None  # the node whose branch now holds the new text
    created: list[str] = field(default_factory=list)


@dataclass
class SyncResult:
    """What one sync found and did.

    `action`: none (both up to date) | write (the file was rewritten to the branch) |
    append | branch | trim (the file's edits, see `apply_edit`) | empty (an emptied
    file, left alone). `edits` is the tip of the branch holding the file's edits;
    when the tree changed too it is not the cursor, and `both_changed` is set.
    """

    document: Path
    file: Path
    key: str
    action: str
    file_changed: bool
    tree_changed: bool
    written: bool
    created: list[str]
    cursor: str | None
    edits: str | None
    first_sync: bool
    chars: int
    notes: list[str] = field(default_factory=list)

    @property
    def both_changed(self) -> bool:
        return self.file_changed and self.tree_changed and self.action != "empty"

    def to_dict(self) -> dict[str, Any]:
        return {
            "document": str(self.document),
            "file": str(self.file),
            "key": self.key,
            "action": self.action,
            "file_changed": self.file_changed,
            "tree_changed": self.tree_changed,
            "both_changed": self.both_changed,
            "written": self.written,
            "created": self.created,
            "cursor": self.cursor,
            "edits": self.edits,
            "first_sync": self.first_sync,
            "chars": self.chars,
            "notes": self.notes,
        }


# ---- the branch and the record --------------------------------------------------------


def branch(doc: Document, tip: str | None) -> Branch:
    if tip is None:
        return Branch([], [])
    ids = doc.path_ids(tip)
    return Branch(ids, [doc.nodes[i].get("text", "") for i in ids])


def digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def file_key(document: str | os.PathLike[str], file: str | os.PathLike[str]) -> str:
    """How the document names a synced file: relative to the document's folder when possible."""
    doc_dir = store.real(document).parent
    target = store.real(file)
    try:
        return Path(os.path.relpath(target, doc_dir)).as_posix()
    except ValueError:  # another drive (Windows)
        return target.as_posix()


def records(doc: Document) -> dict[str, Any]:
    """The sync records of a document, by file key (a copy)."""
    value = doc.data.get(FIELD)
    return dict(value) if isinstance(value, dict) else {}


def _record(doc: Document, key: str) -> dict[str, Any] | None:
    rec = records(doc).get(key)
    if not isinstance(rec, dict):
        return None
    version = rec.get("v")
    if isinstance(version, int) and version > RECORD_VERSION:
        raise DocumentError(
            f"the sync record of {key} was written by a newer loom (version {version}); upgrade loom"
        )
    node = rec.get("node")
    if version != RECORD_VERSION or not (node is None or isinstance(node, str)):
        return None  # damaged: treated as never synced, which refuses to overwrite the file
    if not isinstance(rec.get("branch"), str) or not isinstance(rec.get("file"), str):
        return None
    return rec


def _remember(
    doc: Document,
    key: str,
    tip: str | None,
    text: str,
    file_bytes: bytes,
    *,
    replacing: bytes | None = None,
) -> None:
    """Record what the file now holds (or, with `replacing`, is about to hold instead of
    those bytes). Outside any transaction: undo never rolls it back."""
    record = _new_record(tip, text, file_bytes)
    if replacing is not None:
        # The document is saved before the file is rewritten: if loom dies in between,
        # the next sync must know the file's old bytes were taken in already.
        record["was"] = digest(replacing)
    _put_record(doc, key, record)


def _new_record(tip: str | None, text: str, file_bytes: bytes) -> dict[str, Any]:
    return {
        "v": RECORD_VERSION,
        "node": tip,
        "branch": digest(text),
        "file": digest(file_bytes),
        "at": now(),
    }


def _put_record(doc: Document, key: str, record: Any) -> None:
    """Set (None: drop) the record of one file, as it is."""
    if doc._tx is not None:
        raise RuntimeError("sync records are bookkeeping: set them outside a transaction")
    all_records = records(doc)
    if record is None:
        all_records.pop(key, None)
    else:
        all_records[key] = record
    doc._set_header(FIELD, all_records or None)


def forget(document: str | os.PathLike[str], file: str | os.PathLike[str]) -> bool:
    """Stop remembering FILE (left as it is); its next sync is a first one. False: unknown."""
    key = file_key(document, file)
    with store.editing(document) as doc:
        all_records = records(doc)
        if all_records.pop(key, None) is None:
            return False
        doc._set_header(FIELD, all_records or None)
    return True


def _recorded_branch(doc: Document, rec: dict[str, Any]) -> Branch | None:
    """The branch the file was written from, if its text is still exactly what was written."""
    tip = rec.get("node")
    if tip is not None and tip not in doc.nodes:
        return None  # undone or purged since
    recorded = branch(doc, tip)
    return recorded if digest(recorded.text) == rec["branch"] else None


# ---- diffing ----------------------------------------------------------------------------

# Two levels, so that a long text diffs fast and an edit reads as words: sentences and
# lines first (mostly unique, so difflib is quick on them), then words inside the
# sentences that changed, within a budget (difflib is quadratic on repetitive tokens).
# Past the limits a changed stretch stays one replacement: coarser nodes, never lost text.
_UNITS = {"sentences": r"[^\n]*?(?:[.!?…]+[\s]+|\n+|\Z)", "words": r"\w+|\s+|[^\w\s]"}
_CHUNK_LIMIT = 50_000  # sentences per side
_WORD_LIMIT = 1_000  # words per side of one changed stretch refined word by word
_WORD_BUDGET = 10_000  # words refined in all, per diff
Opcode = tuple[str, int, int, int, int]


def opcodes(old: str, new: str) -> list[Opcode]:
    """difflib-style opcodes turning `old` into `new`, at character offsets."""
    head = _common_run(old, new, min(len(old), len(new)), from_end=False)
    tail = _common_run(old, new, min(len(old), len(new)) - head, from_end=True)
    out: list[Opcode] = []
    if head:
        out.append(("equal", 0, head, 0, head))
    budget = [_WORD_BUDGET]
    out += _diff(old, new, head, len(old) - tail, head, len(new) - tail, "sentences", budget)
    if tail:
        out.append(("equal", len(old) - tail, len(old), len(new) - tail, len(new)))
    return _slide_insertions_right(out, new)


def _common_run(a: str, b: str, limit: int, *, from_end: bool) -> int:
    """Length of the longest common prefix (or suffix) of a and b, at most `limit`.

    A binary search over slice comparisons, which run at C speed: a long file is
    not walked a character at a time in Python.
    """
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if from_end:
            same = a[len(a) - mid : len(a) - lo] == b[len(b) - mid : len(b) - lo]
        else:
            same = a[lo:mid] == b[lo:mid]
        if same:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _diff(
    old: str,
    new: str,
    x1: int,
    x2: int,
    y1: int,
    y2: int,
    unit: str,
    budget: list[int],
) -> list[Opcode]:
    """Opcodes for old[x1:x2] -> new[y1:y2], matched by `unit` (sentences, then words)."""
    if x1 == x2 and y1 == y2:
        return []
    if x1 == x2 or y1 == y2:
        return [("insert" if x1 == x2 else "delete", x1, x2, y1, y2)]
    pattern = _pattern(unit)
    a = [piece for piece in pattern.findall(old, x1, x2) if piece]
    b = [piece for piece in pattern.findall(new, y1, y2) if piece]
    words = unit == "words"
    limit = _WORD_LIMIT if words else _CHUNK_LIMIT
    if max(len(a), len(b)) > limit or (words and len(a) + len(b) > budget[0]):
        return [("replace", x1, x2, y1, y2)]
    if words:
        budget[0] -= len(a) + len(b)
    from difflib import SequenceMatcher  # only when there is an edit to read

    a_at, b_at = _offsets(a, x1), _offsets(b, y1)
    out: list[Opcode] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=not words).get_opcodes():
        span = (a_at[i1], a_at[i2], b_at[j1], b_at[j2])
        if tag == "replace" and not words:
            out += _diff(old, new, *span, "words", budget)
        else:
            out.append((tag, *span))
    return out


@functools.cache
def _pattern(unit: str) -> re.Pattern[str]:
    return re.compile(_UNITS[unit])  # on first use: compiling costs the import ~8 ms


def _offsets(pieces: list[str], start: int) -> list[int]:
    at = [start]
    for piece in pieces:
        at.append(at[-1] + len(piece))
    return at


def _slide_insertions_right(codes: list[Opcode], new: str) -> list[Opcode]:
    """Move each insertion as far right as the text allows ("sand." + " Gulls." rather
    than "sand" + ". Gulls" + "."), so text typed after a node's end is seen as added there."""
    pending: list[list[Any]] = [list(code) for code in codes]
    out: list[list[Any]] = []
    for k, code in enumerate(pending):
        tag, i1, _, j1, j2 = code
        following = pending[k + 1] if k + 1 < len(pending) else None
        if tag == "insert" and following is not None and following[0] == "equal":
            room = following[2] - following[1]
            shift = 0
            while shift < room and new[j1 + shift] == new[j2 + shift]:
                shift += 1
            if shift:
                if out and out[-1][0] == "equal":
                    out[-1][2] += shift
                    out[-1][4] += shift
                else:
                    out.append(["equal", i1, i1 + shift, j1, j1 + shift])
                code = ["insert", i1 + shift, i1 + shift, j1 + shift, j2 + shift]
                following[1] += shift
                following[3] += shift
        if code[1] == code[2] and code[3] == code[4]:
            continue  # an equal stretch the slide used up
        out.append(code)
    return [(str(t), int(a), int(b), int(c), int(d)) for t, a, b, c, d in out]


def map_boundaries(codes: list[Opcode], offsets: list[int]) -> list[int]:
    """Where each offset between two segments of the old text lands in the new text.

    Text inserted at a boundary goes to the node after it (the one before is left
    untouched); a boundary inside replaced or deleted text goes to the end of what
    replaced it, so that text joins the node where the change began. `offsets` must
    be in increasing order; one pass over both lists.
    """
    out: list[int] = []
    k = 0
    for b in offsets:
        while k < len(codes):
            tag, i1, i2, _, _ = codes[k]
            if (i1 < b) if tag == "insert" else (i2 <= b):
                k += 1  # wholly before b
            else:
                break
        if k == len(codes):
            out.append(codes[-1][4] if codes else 0)  # the very end of the old text
            continue
        tag, i1, _, j1, j2 = codes[k]
        if tag == "equal":
            out.append(j1 + (b - i1))
        else:
            out.append(j1 if b == i1 else j2)
    return out


# ---- applying an edit ------------------------------------------------------------------


def apply_edit(
    doc: Document,
    base: Branch,
    new_text: str,
    *,
    make_current: bool = True,
    summary: str = "sync",
) -> Edit:
    """Turn the change from `base`'s text to `new_text` into tree operations, one undo step.

    See the module docstring for the rules. With `make_current` the branch holding
    `new_text` becomes the cursor's; otherwise the cursor stays where it is.
    """
    old_text = base.text
    if new_text == old_text:
        return Edit("none", base.tip)
    if not new_text:
        raise InvalidOperation("an empty text cannot become a branch: nothing was changed")
    boundaries = [0]
    for text in base.texts:
        boundaries.append(boundaries[-1] + len(text))
    at = map_boundaries(opcodes(old_text, new_text), boundaries)
    new_texts = [new_text[at[i] : at[i + 1]] for i in range(len(base.texts))]
    appended = new_text[at[-1] :]
    first = next(
        (i for i, (old, new) in enumerate(zip(base.texts, new_texts, strict=True)) if old != new),
        None,
    )
    # Nothing new may hang under a deleted node: copy the branch from the first deleted one.
    hidden = next((i for i, n in enumerate(base.ids) if doc.nodes[n].get("archived")), None)
    if hidden is not None:
        first = hidden if first is None else min(first, hidden)

    if first is None:
        parent, index = base.tip, None
        segments: list[ops.Segment] = [(appended, "human", None)]
    else:
        # The text each node from the first changed one now holds; emptied nodes drop out.
        parent = base.ids[first - 1] if first > 0 else None
        index = doc.sibling_ids(base.ids[first]).index(base.ids[first]) + 1
        segments = [
            _carried(doc, base.ids[i], new_texts[i])
            for i in range(first, len(base.ids))
            if new_texts[i]
        ]
        if appended:
            segments.append((appended, "human", None))
    with transaction(doc, "sync", summary):
        made = ops.add_chain(
            doc, parent, segments, index=index, move_cursor=make_current, visited=True
        )
        tip = made[-1].id if made else parent  # nothing made: cut on a boundary, ends at parent
        if make_current and not made and tip is not None:
            ops.goto(doc, tip)
    created = [node.id for node in made]
    if first is None:
        return Edit("append", tip, created)
    return Edit("trim" if old_text.startswith(new_text) else "branch", tip, created)


def _carried(doc: Document, original: str, text: str) -> ops.Segment:
    """The segment standing for `original` in an edited copy of its branch."""
    rec = doc.nodes[original]
    if text == rec.get("text", ""):
        # Carried unchanged: its own record (generation, logprobs) still describes it.
        meta = {**rec.get("meta", {}), "copy_of": original}
        meta.pop("version_of", None)
    else:
        meta = {"version_of": original}
    return (text, rec.get("kind", "human"), meta)


# ---- the file ----------------------------------------------------------------------------


def _read_file(path: Path) -> bytes | None:
    if not os.path.lexists(path):
        if not path.parent.is_dir():
            raise BadInput(f"{path}: the folder {path.parent} does not exist")
        return None
    with contextlib.suppress(OSError):  # else read_bytes says what is wrong
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise BadInput(f"{path}: not a regular file (sync reads and writes a text file)")
    return files.read_bytes(path, limit=MAX_FILE_BYTES, what="text file")


def _read_only(path: Path) -> bool:
    # A rename would replace it regardless (and root ignores permissions): honour the intent.
    try:
        return not os.stat(path).st_mode & 0o222
    except OSError:
        return False


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(
            f"{path}: not UTF-8 text (byte {exc.start}); nothing was changed "
            "(save it as UTF-8, or delete it to get the branch back)"
        ) from None


def _without_editor_newline(text: str, base: str) -> str:
    """Editors end files with a newline; one the branch does not end with was not typed."""
    if base.endswith("\n"):
        return text
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


# ---- syncing -----------------------------------------------------------------------------


def sync(
    document: str | os.PathLike[str], file: str | os.PathLike[str], *, adopt: bool = False
) -> SyncResult:
    """Bring FILE and the document's current branch in step (see the module docstring).

    Holds the document's writer lock throughout; the document is saved before the
    file is rewritten, so a crash in between leaves the file's text in one of them.
    `adopt`: a file that exists but was never synced is taken as an edit of the
    current branch (without it, such a file is refused, never overwritten).
    """
    doc_path, file_path = Path(document), Path(file)
    if store.real(file_path) == store.real(doc_path):
        raise InvalidOperation(
            f"{file_path} is the document itself: sync a separate text file (e.g. draft.md)"
        )
    key = file_key(doc_path, file_path)
    if not store.real(doc_path).exists():
        store.load(doc_path)  # the one-line "no such file" error, without a lock file
    with store.locked(doc_path):
        for _ in range(_RETRIES):
            doc = store.load(doc_path)
            raw = _read_file(file_path)
            result, payload, unwritten = _reconcile(doc, doc_path, key, file_path, raw, adopt=adopt)
            if _read_file(file_path) != raw:
                continue  # saved again while we worked: start over from the new text
            if payload is not None and raw is not None and _read_only(file_path):
                raise StorageError(
                    f"{file_path}: read-only, and the branch changed: nothing was changed "
                    f"(chmod u+w {file_path.name} to let loom rewrite it)"
                )
            if doc.dirty:
                store.save(doc, doc_path)
            if payload is not None:
                try:
                    result.written = _replace_unless_changed(file_path, payload, raw)
                finally:
                    if not result.written:
                        # The record must describe the file as it still is, or the next
                        # sync would read the person's edits against the wrong branch.
                        _put_record(doc, key, unwritten)
                        store.save(doc, doc_path)
                if not result.written:
                    result.notes.append(
                        f"{file_path} changed while syncing and was left as it is; sync again"
                    )
            return result
    raise StorageError(f"{file_path}: it keeps changing while loom syncs it; try again")


class _ChangedMeanwhile(OSError):
    """The file was saved again after we read it (an OSError, so write_atomic cleans up)."""


def _replace_unless_changed(path: Path, payload: bytes, seen: bytes | None) -> bool:
    """Write `payload` over the file unless it no longer holds `seen`; False if it did not.

    The check runs after the new text is on disk, just before the rename: an editor's
    save can only be lost in the instant between the two (no editor would tell us more).
    """

    changed = False

    def unchanged() -> None:
        nonlocal changed
        try:
            changed = _read_file(path) != seen
        except LoomError:  # became unreadable: not ours to replace either
            changed = True
        if changed:
            raise _ChangedMeanwhile("changed meanwhile")

    try:
        files.write_atomic(store.real(path), payload, before_replace=unchanged)
    except StorageError:
        if changed:
            return False
        raise
    return True


def _reconcile(
    doc: Document, doc_path: Path, key: str, path: Path, raw: bytes | None, *, adopt: bool
) -> tuple[SyncResult, bytes | None, Any]:
    """Decide and apply (in memory) what a sync does; returns the bytes to write, if any,
    and the record to keep if they cannot be written (what the file then still holds)."""
    current = branch(doc, doc.cursor_id)
    previous = records(doc).get(key)
    rec = _record(doc, key)
    result = SyncResult(
        document=store.real(doc_path),
        file=path,
        key=key,
        action="none",
        file_changed=False,
        tree_changed=False,
        written=False,
        created=[],
        cursor=doc.cursor_id,
        edits=None,
        first_sync=rec is None,
        chars=len(current.text),
    )
    if raw is None:  # never written, or deleted since: write the branch
        result.action = "write"
        if rec is not None:
            result.notes.append(f"{path} was missing: it now holds the current branch again")
        payload = current.text.encode("utf-8")
        _remember(doc, key, current.tip, current.text, payload)
        return result, payload, previous

    text = _decode(raw, path)
    if rec is None:
        if _without_editor_newline(text, current.text) == current.text:
            _remember(doc, key, current.tip, current.text, raw)
            return result, None, None
        if not adopt:
            raise InvalidOperation(
                f"{path} exists and differs from the current branch: loom never overwrites a "
                "file it did not write (move it away, or pass --adopt to take its text as an "
                "edit of the current branch)"
            )
        base = current
        result.file_changed = True
    else:
        result.file_changed = digest(raw) != rec["file"]
        recorded = _recorded_branch(doc, rec)
        result.tree_changed = recorded is None or recorded.tip != current.tip
        if result.file_changed and digest(raw) == rec.get("was"):
            # A rewrite was recorded but never made (loom was killed in between): the
            # file holds what an earlier sync took in, not an edit. Write it again.
            result.file_changed, result.tree_changed = False, True
        if recorded is None and result.file_changed:
            result.notes.append(
                "the branch the file was written from changed since (undone or edited "
                "elsewhere): your edits were compared with the current branch"
            )
        base = recorded or current

    if result.file_changed:
        edited = _without_editor_newline(text, base.text)
        if edited == base.text:
            result.file_changed = False  # only the newline an editor adds
        elif not edited:
            result.file_changed = False
            result.notes.append(
                f"{path} is empty: the tree is unchanged (loom never deletes a branch; "
                "write new text in it, or delete the file to get the branch back)"
            )
            if not result.tree_changed:
                result.action = "empty"
                return result, None, None
        else:
            edit = apply_edit(
                doc, base, edited, make_current=not result.tree_changed, summary=f"sync {key}"
            )
            result.action, result.edits, result.created = edit.kind, edit.tip, edit.created
            result.cursor = doc.cursor_id
            if not result.tree_changed:
                _remember(doc, key, doc.cursor_id, edited, raw)
                result.chars = len(edited)
                return result, None, None
            # Unless the file is rewritten, it holds the branch the edits went into.
            previous = _new_record(edit.tip, edited, raw)
    if not result.tree_changed:
        if rec is None or digest(raw) != rec["file"] or "was" in rec:
            _remember(doc, key, current.tip, current.text, raw)
        return result, None, None

    # The tree changed: the file shows the current branch again (the edits, if any, are kept).
    if result.action == "none":
        result.action = "write"
    payload = current.text.encode("utf-8")
    _remember(doc, key, current.tip, current.text, payload, replacing=raw)
    return result, payload, previous


# ---- generating from the file's end ------------------------------------------------------


@dataclass
class SyncedGeneration:
    """A generation framed by two syncs: `before` took the file's edits in, `after` wrote
    the branch the cursor ended on (with `cursor="first"`, a new child) back to the file."""

    before: SyncResult
    generation: Generation
    after: SyncResult | None  # None: interrupted, so the file was left for the next sync

    def to_dict(self) -> dict[str, Any]:
        return {
            "before": self.before.to_dict(),
            "after": None if self.after is None else self.after.to_dict(),
        }


def _synced_request(request: GenerationRequest | None, before: SyncResult) -> GenerationRequest:
    from dataclasses import replace

    from loom.generation.request import GenerationRequest

    request = request or GenerationRequest()
    if request.node is not None or request.regenerate is not None or request.context is not None:
        raise InvalidOperation(
            "a synced generation continues the end of its file: give no node, "
            "regeneration or context"
        )
    if before.cursor is None:
        raise InvalidOperation(
            f"{before.file} and the document are empty: write the start of the text first"
        )
    return replace(request, node=before.cursor)


def generate(
    document: str | os.PathLike[str],
    file: str | os.PathLike[str],
    request: GenerationRequest | None = None,
    events: Sink | None = None,
    *,
    backends: BackendPool | None = None,
) -> SyncedGeneration:
    """Sync FILE, generate from the end of its branch, then sync again, in one call.

    `request` is as for `loom.generate`, without a node: the generation continues the
    node the file ends on (the cursor after the first sync). With `cursor="first"` or
    `"last"` the file then shows the new child; with "stay" it is unchanged. The caller
    checks `result.generation` (`.check()`), as with `loom.generate`.
    """
    from loom.generation.core import generate as run
    from loom.generation.core import refuse_running_loop

    refuse_running_loop("loom.sync.generate", "await loom.sync.agenerate(...)")
    before = sync(document, file)
    generation = run(document, _synced_request(request, before), events, backends=backends)
    after = None if generation.interrupted else sync(document, file)
    return SyncedGeneration(before, generation, after)


async def agenerate(
    document: str | os.PathLike[str],
    file: str | os.PathLike[str],
    request: GenerationRequest | None = None,
    events: Sink | None = None,
    *,
    backends: BackendPool | None = None,
) -> SyncedGeneration:
    """`generate` inside a running event loop (the syncs run in a worker thread).

    Cancelling it keeps the finished branches (see `loom.agenerate`); the file is then
    left as it is, for the next sync.
    """
    import asyncio

    from loom.generation.core import agenerate as run

    before = await asyncio.to_thread(sync, document, file)
    generation = await run(document, _synced_request(request, before), events, backends=backends)
    after = None if generation.interrupted else await asyncio.to_thread(sync, document, file)
    return SyncedGeneration(before, generation, after)


# ---- watching ----------------------------------------------------------------------------

POLL_INTERVAL = 0.25  # seconds between looks at the two files: saves show up well within a second
_SETTLE = 0.05  # a file still being written keeps changing: wait until two looks agree


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@contextlib.contextmanager
def watching(file: str | os.PathLike[str]) -> Iterator[None]:
    """Claim FILE for one watcher: a second `watch` of the same file is refused.

    The claim is a lock in loom's per-user folder, so it never leaves files beside
    the user's. (Two watchers under different LOOM_HOMEs are still safe: each sync
    holds the document's lock, and a sync with nothing new to apply does nothing.)
    """
    from loom.workspace import loom_home

    folder = loom_home() / "watch"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{folder}: cannot create ({files.reason(exc)})") from None
    claim = folder / digest(str(store.real(file)))[:32]
    try:
        with store.locked(claim, timeout=0):
            yield
    except LockTimeout:
        raise InvalidOperation(
            f"{file} is already watched by another `loom sync --watch`: stop that one first"
        ) from None


def watch(
    document: str | os.PathLike[str],
    file: str | os.PathLike[str],
    *,
    stop: threading.Event,
    report: Callable[[SyncResult], None],
    fail: Callable[[LoomError], None],
    adopt: bool = False,
    interval: float = POLL_INTERVAL,
) -> None:
    """Sync now, then again whenever the file or the document changes, until `stop` is set.

    Changes are found by polling both files' identity (inode, size, modification
    time), which works on every platform and file system. An error in the first sync
    is raised; later ones go to `fail` (each distinct message once) and watching goes
    on, so a file saved half-way or briefly invalid does not end it.
    """
    doc_path, file_path = Path(document), Path(file)

    def look() -> tuple[Any, Any]:
        return (_identity(store.real(doc_path)), _identity(file_path))

    with watching(file_path):
        # Each look is taken before the sync it leads to: a save landing during a sync is
        # seen by the next look (our own writes cost one more sync, which finds nothing).
        seen = look()
        report(sync(doc_path, file_path, adopt=adopt))
        last_error: str | None = None
        while not stop.wait(interval):
            current = look()
            if current == seen:
                continue
            while not stop.wait(_SETTLE):
                settled = look()
                if settled == current:
                    break
                current = settled
            if stop.is_set():
                break
            seen = current
            try:
                result = sync(doc_path, file_path, adopt=adopt)
            except LoomError as exc:
                if exc.message != last_error:
                    fail(exc)
                last_error = exc.message
            else:
                last_error = None
                if result.action != "none" or result.notes:
                    report(result)
