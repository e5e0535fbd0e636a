"""What every foreign format shares: the intermediate forest, one graft into a document,
strict readers for untrusted input, timestamps, and the node selection exporters walk.

An importer turns a foreign file into an `ImportedForest` (source ids, ordered
children, loom-shaped fields) and never touches a document; `graft` is the only
code that adds a forest to a document, inside one journal transaction, so an
import is one undoable step and a failure leaves the document as it was.
Everything here is iterative: imported trees can be thousands of levels deep.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from loom.document import Document, Record, now
from loom.errors import DocumentError, InvalidOperation
from loom.ids import new_id
from loom.journal import transaction

APPLE_EPOCH = datetime(2001, 1, 1, tzinfo=UTC)
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Numbers above this are milliseconds, not seconds (1e11 s is the year 5138).
_MS_THRESHOLD = 1e11
# Stable namespace for ids an exporter has to invent, so re-exporting gives the same ids.
EXPORT_NAMESPACE = uuid.UUID("6f1d0a52-3f55-4d0e-9a43-2b8f1c7e5a10")
_WHITESPACE = re.compile(r"\s+")
_SURROGATE = re.compile("[\ud800-\udfff]")


# ---- the intermediate forest -------------------------------------------------------------


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


def short(value: object, limit: int = 40) -> str:
    """A source id (or any value) quoted for an error message, cut if long."""
    text = str(value)
    return '"' + (text if len(text) <= limit else text[: limit - 1] + "…") + '"'


# ---- linking flat records into a forest ------------------------------------------------------


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


# ---- strict readers for untrusted values -------------------------------------------------------


def describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class Reader:
    """Typed access to a foreign file's values: wrong types become one clear DocumentError."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt

    def fail(self, message: str) -> DocumentError:
        return DocumentError(f"{self.fmt}: {message}")

    def obj(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"{where} is {describe(value)}, not an object")
        return value

    def arr(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(f"{where} is {describe(value)}, not a list")
        return value

    def text(self, rec: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
        value = rec.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.fail(f'{where} has a "{key}" that is {describe(value)}, not text')
        return value

    def opt_text(self, rec: Mapping[str, Any], key: str, where: str) -> str | None:
        value = rec.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(f'{where} has a "{key}" that is {describe(value)}, not text')
        return value

    def ident(self, value: Any, where: str) -> str:
        """An id: text, or a whole number (some tools write numeric ids)."""
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise self.fail(f"{where} is {describe(value)}, not an id")

    def opt_ident(self, rec: Mapping[str, Any], key: str, where: str) -> str | None:
        value = rec.get(key)
        if value is None or value == "":
            return None
        return self.ident(value, f'the "{key}" of {where}')

    def idents(self, rec: Mapping[str, Any], key: str, where: str) -> list[str]:
        value = rec.get(key)
        if value is None:
            return []
        items = self.arr(value, f'the "{key}" of {where}')
        return [self.ident(v, f'an entry of the "{key}" of {where}') for v in items]

    def flag(self, rec: Mapping[str, Any], key: str, where: str, default: bool = False) -> bool:
        value = rec.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        raise self.fail(f'{where} has a "{key}" that is {describe(value)}, not true/false')

    def number(self, rec: Mapping[str, Any], key: str, where: str) -> float | None:
        value = rec.get(key)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.fail(f'{where} has a "{key}" that is {describe(value)}, not a number')
        return float(value)


def rest(rec: Mapping[str, Any], known: Iterable[str]) -> dict[str, Any]:
    """The fields of `rec` an importer did not map (kept in meta.import.fields).

    Secret-looking keys are dropped later, for the whole forest at once
    (`ImportedForest.drop_secrets`), so values an importer copies by hand are covered too.
    """
    skip = set(known)
    return {k: v for k, v in rec.items() if k not in skip}


# ---- secrets ---------------------------------------------------------------------------------

_KEY_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")
# A key holding any of these words is a secret: "client_secret", "passwordHint", "Authorization".
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "secrets",
        "authorization",
        "credential",
        "credentials",
        "apikey",
        "apikeys",
    }
)
# A key ending with one of these: "apiKey", "openaiKey", "access_token", "X-Auth", "key".
_SECRET_ENDINGS = frozenset(("key", "token", "auth", "pwd", "cookie"))
# Ordinary keys with those endings, as foreign formats use them (words joined, lower case).
_NOT_SECRET = frozenset(
    {
        "togglekey",
        "hotkey",
        "shortcutkey",
        "sortkey",
        "primarykey",
        "foreignkey",
        "generatedtoken",
        "bostoken",
        "eostoken",
        "padtoken",
        "unktoken",
        "stoptoken",
    }
)


def secret_key(name: object) -> bool:
    """Whether a field's name says it holds a credential (case and separators ignored)."""
    return isinstance(name, str) and _secret_name(name)


@functools.lru_cache(maxsize=4096)  # imported files repeat the same few keys on every node
def _secret_name(name: str) -> bool:
    words = [w.lower() for w in _KEY_WORDS.findall(name)]
    joined = "".join(words)
    if not words or joined in _NOT_SECRET:
        return False
    return (
        words[-1] in _SECRET_ENDINGS
        or any(w in _SECRET_WORDS for w in words)
        or joined.endswith(("apikey", "apikeys"))
    )


def drop_secrets(value: Any) -> tuple[Any, int]:
    """A copy of `value` (parsed JSON) without secret-looking keys at any depth, and how many
    keys were dropped. A "token" beside a "logprob" is a generated token, not a secret."""
    if not isinstance(value, dict | list | tuple):
        return value, 0
    dropped = 0
    top: Any = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, Any]] = [(value, top)]
    while stack:
        source, target = stack.pop()
        if isinstance(source, dict):
            generated = "logprob" in source or "logprobs" in source
            items: Iterable[tuple[Any, Any]] = source.items()
        else:
            generated = False
            items = enumerate(source)
        for key, item in items:
            if isinstance(source, dict) and secret_key(key) and not (generated and key == "token"):
                dropped += 1
                continue
            if isinstance(item, dict | list | tuple):
                copy: Any = {} if isinstance(item, dict) else []
                stack.append((item, copy))
                item = copy
            if isinstance(target, dict):
                target[key] = item
            else:
                target.append(item)
    return top, dropped


def clean_tag(name: str) -> str:
    """Loom tags are single words: runs of whitespace become '-'."""
    return _WHITESPACE.sub("-", name.strip())


def tags_from(raw: Iterable[str]) -> tuple[list[str], bool]:
    """Loom tags from source tag names; the flag says whether any name had to change."""
    out: list[str] = []
    changed = False
    for name in raw:
        tag = clean_tag(name)
        changed |= tag != name
        if tag and tag not in out:
            out.append(tag)
    return out, changed


# ---- JSON from untrusted bytes --------------------------------------------------------------


def loads(raw: bytes, name: str, *, keep_surrogates: bool = False) -> Any:
    """Parse JSON, with one-line errors. Handles nesting deeper than orjson allows.

    Text with unpaired UTF-16 surrogates (JavaScript tools can write them) is parsed
    by the standard library; unless `keep_surrogates`, they become U+FFFD.
    """
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        raise DocumentError(f"{name}: the file is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if "depth limit" in reason or "recursion" in reason or "surrogate" in reason:
            data = _std_loads(raw, name)
            return data if keep_surrogates else scrub_surrogates(data)
        pos = getattr(exc, "pos", None)
        where = f" at byte {pos}" if pos is not None else ""
        truncated = pos is not None and pos >= len(raw.rstrip()) - 1
        hint = " (the file looks truncated)" if truncated else ""
        raise DocumentError(f"{name}: not valid JSON{where}{hint}: {exc.msg}") from None


def _std_loads(raw: bytes, name: str) -> Any:
    """The standard library's parser (lenient about surrogates), on a thread with a deep stack.

    Its C scanner recurses once per nesting level; a big stack and a raised limit
    let files nested thousands of levels deep parse.
    """
    import json

    result: list[Any] = []
    error: list[BaseException] = []

    def work() -> None:
        try:
            result.append(json.loads(raw.decode("utf-8")))
        except BaseException as exc:  # re-raised on the calling thread
            error.append(exc)

    old_limit = sys.getrecursionlimit()
    old_stack = threading.stack_size()
    try:
        threading.stack_size(512 * 1024 * 1024)
        sys.setrecursionlimit(max(old_limit, 400_000))
        worker = threading.Thread(target=work, name="loom-json")
        worker.start()
        worker.join()
    finally:
        threading.stack_size(old_stack)
        sys.setrecursionlimit(old_limit)
    if not error:
        return result[0]
    exc = error[0]
    if isinstance(exc, RecursionError):
        raise DocumentError(f"{name}: nested too deeply to read") from None
    if isinstance(exc, UnicodeDecodeError):
        raise DocumentError(f"{name}: not UTF-8 text (bad byte at {exc.start})") from None
    if isinstance(exc, json.JSONDecodeError):
        raise DocumentError(f"{name}: not valid JSON at byte {exc.pos}: {exc.msg}") from None
    raise exc


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def has_surrogate_escapes(raw: bytes) -> bool:
    """Whether JSON bytes contain \\uD800-\\uDFFF escapes (paired or not)."""
    return _SURROGATE_ESCAPE.search(raw) is not None


def fix_text(text: str) -> str:
    """Join surrogate pairs and replace unpaired surrogates with U+FFFD."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def scrub_surrogates(data: Any) -> Any:
    """`fix_text` on every string inside parsed JSON (iteratively)."""
    if isinstance(data, str):
        return fix_text(data)
    stack = [data]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key in list(current):
                value = current[key]
                fixed_key = fix_text(key) if isinstance(key, str) else key
                if isinstance(value, str):
                    value = fix_text(value)
                elif isinstance(value, dict | list):
                    stack.append(value)
                if fixed_key != key:
                    del current[key]
                current[fixed_key] = value
        elif isinstance(current, list):
            for i, value in enumerate(current):
                if isinstance(value, str):
                    current[i] = fix_text(value)
                elif isinstance(value, dict | list):
                    stack.append(value)
    return data


# ---- timestamps ----------------------------------------------------------------------------


def iso(dt: datetime) -> str:
    """Loom's timestamp form: ISO 8601 UTC with milliseconds and a Z."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def to_iso(value: Any, *, epoch: str = "unix") -> str | None:
    """A source timestamp as loom's ISO form, or None if it cannot be read.

    Numbers count seconds (milliseconds when large) since `epoch` ("unix", or
    "apple": 2001-01-01, as OpenLoom writes). Text may be ISO 8601, pyloom's
    "2021-09-16-21.55.18", or a number. Times without a zone are taken as UTC.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return to_iso(float(text), epoch=epoch)
        except ValueError:
            pass
        for parse in (_parse_iso, _parse_pyloom):
            dt = parse(text)
            if dt is not None:
                return iso(dt)
        return None
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds):
            return None
        if epoch == "unix" and abs(seconds) > _MS_THRESHOLD:
            seconds /= 1000.0
        base = APPLE_EPOCH if epoch == "apple" else UNIX_EPOCH
        try:
            return iso(base + timedelta(seconds=seconds))
        except (OverflowError, ValueError):
            return None
    return None


def _parse_iso(text: str) -> datetime | None:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _parse_pyloom(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%d-%H.%M.%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_iso(value: Any) -> datetime | None:
    """A loom ISO timestamp back as a datetime (None if absent or unreadable)."""
    if not isinstance(value, str):
        return None
    return _parse_iso(value)


def epoch_seconds(value: Any, *, epoch: str = "unix") -> float | None:
    dt = parse_iso(value)
    if dt is None:
        return None
    base = APPLE_EPOCH if epoch == "apple" else UNIX_EPOCH
    return (dt - base).total_seconds()


# ---- token probabilities ----------------------------------------------------------------------


_BYTE_TOKEN = "bytes:"
_BYTE_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def _token_bytes(token: str) -> bytes:
    """OpenAI's "bytes: \\xe2\\x80" token: literal characters and \\xHH escapes, as bytes."""
    out = bytearray()
    body = token[len(_BYTE_TOKEN) :]
    i = 0
    while i < len(body):
        match = _BYTE_ESCAPE.match(body, i)
        if match:
            out.append(int(match.group(1), 16))
            i = match.end()
        else:
            out.extend(body[i].encode("utf-8", "surrogatepass"))
            i += 1
    return bytes(out)


def logprobs_record(
    tokens: list[str],
    lps: list[float],
    top: list[list[tuple[str, float]]] | None,
    *,
    source: str = "unknown",
) -> dict[str, Any]:
    """Loom's compact `meta.logprobs` shape (see docs/schema.md). `source` uses the
    engine's words: "post-sampling" for the OpenAI API, "unknown" when not known.

    Runs of byte tokens (a character split across tokens, "bytes:\\xe2\\x80") are joined
    into the character they spell, with the summed logprob, so offsets match the text.
    """
    texts: list[str] = []
    values: list[float] = []
    alts: list[list[tuple[str, float]]] = []
    pending = b""
    pending_lp = 0.0
    for i, token in enumerate(tokens):
        if token.startswith(_BYTE_TOKEN):
            pending += _token_bytes(token)
            pending_lp += lps[i]
            try:
                decoded = pending.decode("utf-8")
            except UnicodeDecodeError:
                continue
            texts.append(decoded)
            values.append(pending_lp)
            alts.append([])
            pending, pending_lp = b"", 0.0
            continue
        if pending:
            texts.append(pending.decode("utf-8", "replace"))
            values.append(pending_lp)
            alts.append([])
            pending, pending_lp = b"", 0.0
        texts.append(token)
        values.append(lps[i])
        alts.append(top[i] if top is not None and i < len(top) else [])
    if pending:
        texts.append(pending.decode("utf-8", "replace"))
        values.append(pending_lp)
        alts.append([])
    out: dict[str, Any] = {"source": source, "tokens": texts, "lp": values}
    if any(alts):
        out["top"] = [[[t, lp] for t, lp in entry] for entry in alts]
    return out


def fit(text: str, logprobs: dict[str, Any]) -> dict[str, Any] | None:
    """The record if its tokens spell the start of `text` (so every offset is right), else None.

    Tokens past the end of a fully covered text (sampled after a stop sequence the
    tool cut off) are dropped.
    """
    tokens = logprobs.get("tokens")
    if not isinstance(tokens, list) or not tokens:
        return None
    offset = 0
    count = 0
    for token in tokens:
        if not isinstance(token, str) or not text.startswith(token, offset):
            break
        offset += len(token)
        count += 1
    if count == len(tokens):
        return logprobs
    if offset != len(text) or count == 0:
        return None
    return {k: (v[:count] if isinstance(v, list) else v) for k, v in logprobs.items()}


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def logprobs_from_openai(raw: Any, *, source: str = "unknown") -> dict[str, Any] | None:
    """OpenAI completion logprobs ({tokens, token_logprobs, top_logprobs}) in loom's shape.

    Chat-style `{"content": [{token, logprob, top_logprobs: [{token, logprob}]}]}` and a
    bare list of such entries are read too. Returns None if the value is not one of these.
    """
    if isinstance(raw, dict) and isinstance(raw.get("content"), list):
        raw = raw["content"]
    if isinstance(raw, list):
        tokens: list[str] = []
        lps: list[float] = []
        top: list[list[tuple[str, float]]] = []
        for entry in raw:
            if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
                return None
            lp = _finite(entry.get("logprob"))
            if lp is None:
                return None
            tokens.append(entry["token"])
            lps.append(lp)
            alts: list[tuple[str, float]] = []
            for alt in entry.get("top_logprobs") or ():
                if (
                    isinstance(alt, dict)
                    and isinstance(alt.get("token"), str)
                    and _finite(alt.get("logprob")) is not None
                ):
                    alts.append((alt["token"], float(alt["logprob"])))
            top.append(alts)
        return logprobs_record(tokens, lps, top, source=source) if tokens else None
    if not isinstance(raw, dict):
        return None
    toks = raw.get("tokens")
    values = raw.get("token_logprobs")
    if (
        not isinstance(toks, list)
        or not isinstance(values, list)
        or len(toks) != len(values)
        or not toks
    ):
        return None
    if not all(isinstance(t, str) for t in toks):
        return None
    lps_out: list[float] = []
    for value in values:
        # The first token of an echoed prompt has no logprob; such records are not ours to align.
        number = _finite(value)
        if number is None:
            return None
        lps_out.append(number)
    tops_raw = raw.get("top_logprobs")
    tops: list[list[tuple[str, float]]] | None = None
    if isinstance(tops_raw, list) and len(tops_raw) == len(toks):
        tops = [alternatives(entry) for entry in tops_raw]
    return logprobs_record(list(toks), lps_out, tops, source=source)


def alternatives(entry: Any) -> list[tuple[str, float]]:
    """{"tok": logprob, …} as (token, logprob) pairs, most likely first."""
    if not isinstance(entry, dict):
        return []
    pairs = [(str(k), float(v)) for k, v in entry.items() if _finite(v) is not None]
    pairs.sort(key=lambda kv: kv[1], reverse=True)
    return pairs


def prompt_fingerprint(prompt: str) -> dict[str, Any]:
    """How meta.gen records a prompt without storing it (the engine's own digest)."""
    from loom.generation import prompt_digest  # the package's __init__ loads no backend

    return {"prompt": prompt_digest(prompt)}


# ---- grafting ------------------------------------------------------------------------------


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


# ---- what an exporter walks ----------------------------------------------------------------------


@dataclass
class Selection:
    """The nodes an export covers: ordered roots and children, all in document order."""

    roots: list[str]
    children: dict[str, list[str]]
    order: list[str]

    def parent_map(self) -> dict[str, str | None]:
        parents: dict[str, str | None] = {r: None for r in self.roots}
        for node_id, kids in self.children.items():
            for kid in kids:
                parents[kid] = node_id
        return parents


def select(doc: Document, node: str | None = None, *, archived: bool = False) -> Selection:
    """The whole forest (live nodes), or NODE's subtree plus the chain of its ancestors.

    The ancestors come without their other branches, so every exported node keeps
    its full text (and a chat keeps its earlier turns).
    """
    nodes = doc.nodes

    def kids_of(node_id: str) -> list[str]:
        kids = nodes[node_id].get("children", ())
        return list(kids) if archived else [k for k in kids if not nodes[k].get("archived")]

    children: dict[str, list[str]] = {}
    if node is None:
        roots = [r for r in doc.root_ids if archived or not nodes[r].get("archived")]
        tops = roots
    else:
        path = doc.path_ids(node)
        roots = [path[0]]
        for upper, lower in itertools.pairwise(path):
            children[upper] = [lower]
        tops = [node]
    order: list[str] = []
    if node is not None:
        order.extend(doc.path_ids(node)[:-1])
    stack = list(reversed(tops))
    while stack:
        current = stack.pop()
        order.append(current)
        kids = kids_of(current)
        children[current] = kids
        stack.extend(reversed(kids))
    return Selection(roots=roots, children=children, order=order)


def import_fields(doc: Document, node_id: str, fmt: str) -> dict[str, Any]:
    """The source fields a node kept from an earlier import of format `fmt` (else {})."""
    meta = doc.nodes[node_id].get("meta") or {}
    record = meta.get("import") if isinstance(meta, dict) else None
    if (
        isinstance(record, dict)
        and record.get("format") == fmt
        and isinstance(record.get("fields"), dict)
    ):
        fields: dict[str, Any] = drop_secrets(record["fields"])[0]  # saved by an older loom
        return fields
    return {}


def import_id(doc: Document, node_id: str, fmt: str) -> str | None:
    meta = doc.nodes[node_id].get("meta") or {}
    record = meta.get("import") if isinstance(meta, dict) else None
    if (
        isinstance(record, dict)
        and record.get("format") == fmt
        and isinstance(record.get("id"), str)
    ):
        return str(record["id"])
    return None


def document_import(doc: Document, fmt: str, root: str) -> dict[str, Any]:
    """The document-level fields of the `fmt` import that brought in `root` (else {})."""
    imports = doc.data.get("import")
    if not isinstance(imports, dict):
        return {}
    for entry in reversed(imports.get(fmt) or []):
        if (
            isinstance(entry, dict)
            and root in (entry.get("roots") or ())
            and isinstance(entry.get("fields"), dict)
        ):
            fields: dict[str, Any] = drop_secrets(entry["fields"])[0]  # saved by an older loom
            return fields
    return {}


def export_id(doc: Document, node_id: str) -> uuid.UUID:
    """A stable UUID for a node that has no id in the target format."""
    return uuid.uuid5(EXPORT_NAMESPACE, f"{doc.id}/{node_id}")


def export_ids(
    doc: Document, selection: Selection, fmt: str, fresh: Callable[[uuid.UUID], str] = str
) -> dict[str, str]:
    """Each selected node's id in `fmt`: the one it was imported with (each used once), else
    a stable UUID written by `fresh`, so a round trip keeps the source's ids."""
    used: set[str] = set()
    out: dict[str, str] = {}
    for node_id in selection.order:
        original = import_id(doc, node_id, fmt)
        candidate = (
            original if original and original not in used else fresh(export_id(doc, node_id))
        )
        used.add(candidate)
        out[node_id] = candidate
    return out


def one_tree(doc: Document, node: str | None, holder: str) -> Selection:
    """The selection for a format that holds one tree; `holder` names it ("an OpenLoom file")."""
    selection = select(doc, node)
    if not selection.roots:
        raise InvalidOperation("nothing to export: the document has no nodes")
    if len(selection.roots) > 1:
        raise InvalidOperation(
            f"{holder} holds one tree and this document has {len(selection.roots)}: "
            "name the tree to export with NODE (e.g. its root)"
        )
    return selection


def gen_of(doc: Document, node_id: str) -> dict[str, Any]:
    meta = doc.nodes[node_id].get("meta") or {}
    gen = meta.get("gen") if isinstance(meta, dict) else None
    return dict(gen) if isinstance(gen, dict) else {}


def model_of(doc: Document, node_id: str) -> str | None:
    gen = gen_of(doc, node_id)
    for key in ("model", "reported_model", "requested_model"):
        value = gen.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
