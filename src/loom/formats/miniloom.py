"""MiniLoom (JD-P): each node stores a diff-match-patch patch against its parent's text.

A node's full text is its parent's full text with the node's patch applied. Loom
needs segments, so each node becomes the part of its full text that follows its
parent's. A rewrite that changes earlier text cannot be a segment there: it moves
up to the nearest ancestor whose full text its own still starts with (or becomes a
root), with `meta.version_of` pointing at the node it rewrote. Full texts stay
exactly as MiniLoom shows them.

Patch offsets count UTF-16 code units (JavaScript strings), so patches are applied
to UTF-16 text. Both diff encodings are read: `[op, text]` and `{"0": op, "1": text}`;
so is the patch text format (`@@ -1,3 +1,4 @@` …).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from loom.formats.forest import ImportedForest, ImportedNode, link, short
from loom.formats.readers import Reader, rest, scrub_surrogates, to_iso

FORMAT = "miniloom"
_R = Reader(FORMAT)
_KINDS = {"root": "human", "user": "human", "gen": "model", "import": "import"}
_MAPPED = ("id", "parent", "children", "patch", "timestamp", "read", "model", "finishReason")
_HUNK = re.compile(r"^@@ -(\d+),?(\d*) \+(\d+),?(\d*) @@$")
_UNIT = 2  # bytes per UTF-16 code unit


def sniff(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("loomTree"), dict)


def parse(data: Any, *, name: str = "") -> ImportedForest:
    top = _R.obj(data, "the file")
    tree = _R.obj(top.get("loomTree"), '"loomTree"')
    store = _R.obj(tree.get("nodeStore"), 'the "nodeStore" of "loomTree"')
    forest = ImportedForest(FORMAT, source=name)
    ids: list[str] = []
    parents: dict[str, str | None] = {}
    children: dict[str, list[str]] = {}
    records: dict[str, dict[str, Any]] = {}
    for key, value in store.items():
        where = f"node {short(key)}"
        rec = _R.obj(value, where)
        node_id = _R.opt_ident(rec, "id", where) or key
        if node_id != key:
            raise _R.fail(f'{where} has "id" {short(node_id)}, which differs from its key')
        ids.append(key)
        parents[key] = _R.opt_ident(rec, "parent", where)
        children[key] = _R.idents(rec, "children", where)
        records[key] = rec
    kids, roots = link(FORMAT, ids, parents=parents, children=children, parent_field="parent")
    full = _full_texts(roots, kids, records)
    _place(forest, roots, kids, records, full)
    focus = top.get("focus")
    if isinstance(focus, dict) and focus.get("id") is not None:
        focused = str(focus["id"])
        if focused in forest.nodes:
            forest.cursor = focused
        else:
            forest.notes.append(
                f"the focused node {short(focused)} does not exist; the cursor starts at the root"
            )
    forest.fields = scrub_surrogates(rest(top, ("loomTree", "focus")))
    extra = rest(tree, ("nodeStore",))
    if extra:
        forest.fields["loomTree"] = scrub_surrogates(extra)
    return forest


def _full_texts(
    roots: list[str], kids: dict[str, list[str]], records: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """Every node's full text (as UTF-16 bytes, decoded at the end), parents before children."""
    units: dict[str, bytes] = {}
    stack: list[tuple[str, bytes]] = [(r, b"") for r in reversed(roots)]
    while stack:
        node_id, base = stack.pop()
        text = _apply(
            base, _patches(records[node_id].get("patch"), f"node {short(node_id)}"), node_id
        )
        units[node_id] = text
        stack.extend((k, text) for k in reversed(kids[node_id]))
    return {k: v.decode("utf-16-le", "surrogatepass") for k, v in units.items()}


def _place(
    forest: ImportedForest,
    roots: list[str],
    kids: dict[str, list[str]],
    records: dict[str, dict[str, Any]],
    full: dict[str, str],
) -> None:
    """Segments and loom parents: a node goes under its nearest ancestor whose text it extends."""
    loom_parent: dict[str, str | None] = {}
    moved = 0
    stack: list[tuple[str, str | None]] = [(r, None) for r in reversed(roots)]
    while stack:
        node_id, parent = stack.pop()
        text = full[node_id]
        target = parent
        while target is not None and not text.startswith(full[target]):
            target = loom_parent[target]
        loom_parent[node_id] = target
        node = _node(
            node_id, records[node_id], text[len(full[target]) :] if target is not None else text
        )
        if target != parent:
            node.version_of = parent
            moved += 1
        forest.nodes[node_id] = node
        if target is None:
            forest.roots.append(node_id)
        else:
            forest.nodes[target].children.append(node_id)
        stack.extend((k, node_id) for k in reversed(kids[node_id]))
    if moved:
        forest.notes.append(
            f"{moved} rewrite(s) change earlier text; each sits under the nearest ancestor it extends, "
            "with meta.version_of naming the node it rewrote"
        )


def _node(node_id: str, rec: dict[str, Any], segment: str) -> ImportedNode:
    where = f"node {short(node_id)}"
    node = ImportedNode(node_id, text=segment)
    kind = rec.get("type")
    model = _R.opt_text(rec, "model", where)
    node.kind = (
        _KINDS.get(kind, "model" if kind == "rewrite" and model else "human")
        if isinstance(kind, str)
        else "human"
    )
    node.visited = _R.flag(rec, "read", where, default=kind == "root")
    gen: dict[str, Any] = {}
    if model:
        gen["model"] = model
    finish = _R.opt_text(rec, "finishReason", where)
    if finish:
        gen["finish_reason"] = finish
    if gen:
        node.meta["gen"] = gen
    stamp = rec.get("timestamp")
    fields = rest(rec, _MAPPED)
    if stamp is not None:
        node.created = to_iso(stamp)
        if node.created is None:
            fields["timestamp"] = stamp
    node.fields = scrub_surrogates(fields)
    return node


# ---- patches -------------------------------------------------------------------------------


Patch = tuple[int, bytes, bytes]  # (start in the text being patched, text before, text after)


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-le", "surrogatepass")


def _patches(raw: Any, where: str) -> list[Patch]:
    if raw is None or raw == "" or raw == []:
        return []
    if isinstance(raw, str):
        return _patches_from_text(raw, where)
    if isinstance(raw, dict):
        raw = [raw]
    out: list[Patch] = []
    for i, value in enumerate(_R.arr(raw, f'the "patch" of {where}')):
        what = f"patch {i + 1} of {where}"
        patch = _R.obj(value, what)
        start = patch.get("start2", patch.get("start1"))
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise _R.fail(f'{what} has a "start2" that is not a position')
        before: list[bytes] = []
        after: list[bytes] = []
        for j, diff in enumerate(_R.arr(patch.get("diffs"), f'the "diffs" of {what}')):
            op, text = _diff(diff, f"diff {j + 1} of {what}")
            if op <= 0:
                before.append(_utf16(text))
            if op >= 0:
                after.append(_utf16(text))
        out.append((start, b"".join(before), b"".join(after)))
    return out


def _diff(value: Any, where: str) -> tuple[int, str]:
    if isinstance(value, list) and len(value) == 2:
        op, text = value
    elif isinstance(value, dict) and "0" in value and "1" in value:
        op, text = value["0"], value["1"]
    else:
        raise _R.fail(f'{where} is neither [op, text] nor {{"0": op, "1": text}}')
    if isinstance(op, bool) or op not in (-1, 0, 1) or not isinstance(text, str):
        raise _R.fail(f"{where} has op {op!r} and text of type {type(text).__name__}")
    return int(op), text


def _patches_from_text(text: str, where: str) -> list[Patch]:
    """diff-match-patch's patch_toText format: hunks of ' ', '-', '+' lines, URI-encoded."""
    out: list[Patch] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        match = _HUNK.match(lines[i])
        if match is None:
            raise _R.fail(f"the patch text of {where} has a bad hunk header: {lines[i][:40]!r}")
        start2, length2 = int(match.group(3)), match.group(4)
        start = start2 if length2 == "0" else start2 - 1
        before: list[bytes] = []
        after: list[bytes] = []
        i += 1
        while i < len(lines) and lines[i] and not lines[i].startswith("@"):
            sign, body = lines[i][0], lines[i][1:]
            try:
                decoded = unquote(body, errors="strict")
            except UnicodeDecodeError:
                raise _R.fail(f"the patch text of {where} has an undecodable line") from None
            if sign not in " -+":
                raise _R.fail(f"the patch text of {where} has a line starting with {sign!r}")
            if sign in " -":
                before.append(_utf16(decoded))
            if sign in " +":
                after.append(_utf16(decoded))
            i += 1
        out.append((max(start, 0), b"".join(before), b"".join(after)))
    return out


def _apply(base: bytes, patches: list[Patch], node_id: str) -> bytes:
    """Apply patches made against `base` in order; tolerate shifted context, never guess text."""
    text = base
    delta = 0
    for start, before, after in patches:
        expected = (start + delta) * _UNIT
        if 0 <= expected <= len(text) and text[expected : expected + len(before)] == before:
            found = expected
        else:
            found = _nearest(text, before, expected)
            if found < 0:
                raise _R.fail(
                    f"the patch of node {short(node_id)} does not apply to its parent's text "
                    f"(expected {before.decode('utf-16-le', 'replace')[:30]!r} at offset {start})"
                )
            delta += (found - expected) // _UNIT
        text = text[:found] + after + text[found + len(before) :]
    return text


def _nearest(text: bytes, needle: bytes, around: int) -> int:
    """The occurrence of `needle` (at an even offset) closest to `around`, or -1."""
    if not needle:
        return around if 0 <= around <= len(text) else -1
    best = -1
    position = text.find(needle)
    while position >= 0:
        if position % _UNIT == 0 and (best < 0 or abs(position - around) < abs(best - around)):
            best = position
        position = text.find(needle, position + 1)
    return best
