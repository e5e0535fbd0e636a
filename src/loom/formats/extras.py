"""What a foreign format has no field for, carried in a free field named "loom" on each node.

OpenLoom and Loomsidian keep unknown node keys, so an export puts loom's tags,
note, token probabilities, generation record, edit history (and what else the
format lacks) under `"loom"`, and an import of that format reads them back: a
round trip through either keeps them. Deleted nodes cannot travel that way (the
other tool would show them as live), so they are left out; `losses` says what an
export leaves out or hides in the free field, with counts, for a note.
"""

from __future__ import annotations

import math
from typing import Any

from loom.document import KINDS, Document
from loom.formats.selection import Selection, select
from loom.formats.tokens import fit

FIELD = "loom"

# What each piece is called in a note, in the order notes list them.
_LABELS = {
    "tags": "tags",
    "note": "notes",
    "logprobs": "token probabilities",
    "gen": "generation records",
    "history": "edit history",
    "kind": "node kinds",
    "bookmark": "bookmark titles",
    "created": "creation times",
}


def carry(doc: Document, node_id: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """The `keys` of a node that are set, as the "loom" free field holds them ({} if none)."""
    rec = doc.nodes[node_id]
    raw_meta = rec.get("meta")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    out: dict[str, Any] = {}
    for key in keys:
        if key in ("logprobs", "gen"):
            value = meta.get(key)
        elif key == "bookmark":
            mark = rec.get("bookmark")
            value = mark.get("title") if isinstance(mark, dict) else None
        elif key == "kind":
            value = rec.get("kind") if rec.get("kind") != "human" else None
        else:
            value = rec.get(key)
        if value not in (None, "", [], {}):
            out[key] = value
    if "gen" in out:
        from loom.formats.secrets import drop_secrets  # an older loom may have kept a key

        out["gen"] = drop_secrets(out["gen"])[0]
    return out


def restore(node: Any, value: Any) -> list[str]:
    """Put a "loom" free field read from a file back on an ImportedNode.

    Each piece is checked like any imported value; what does not fit (token
    probabilities of a text edited in the other tool) is left out. Returns the pieces
    that were not restored, for a note.
    """
    if not isinstance(value, dict):
        return ["the loom field"]
    skipped: list[str] = []
    for key, item in value.items():
        if key == "tags" and isinstance(item, list) and all(isinstance(t, str) for t in item):
            node.tags = list(dict.fromkeys([*node.tags, *item]))
        elif key == "note" and isinstance(item, str):
            node.note = item
        elif key == "logprobs" and _logprobs(item):
            fitted = fit(node.text, item)
            if fitted is None:
                skipped.append(_LABELS[key])
            else:
                node.meta["logprobs"] = fitted
        elif key == "gen" and isinstance(item, dict):
            node.meta["gen"] = item
        elif key == "history" and isinstance(item, list) and all(_history(h) for h in item):
            node.history = [dict(h) for h in item]
        elif key == "kind" and item in KINDS:
            node.kind = str(item)
        elif key == "bookmark" and isinstance(item, str):
            node.bookmark = {**(node.bookmark or {}), "title": item}
        elif key == "created" and isinstance(item, str):
            node.created = node.created or item
        else:
            skipped.append(_LABELS.get(key, str(key)))
    return skipped


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _logprobs(record: Any) -> bool:
    """A well-formed meta.logprobs: as many finite logprobs (and alternative lists) as tokens."""
    if not isinstance(record, dict):
        return False
    tokens, lps, top = record.get("tokens"), record.get("lp"), record.get("top")
    if not isinstance(tokens, list) or not isinstance(lps, list) or len(tokens) != len(lps):
        return False
    if not all(isinstance(t, str) for t in tokens) or not all(_number(v) for v in lps):
        return False
    if top is None:
        return True
    return (
        isinstance(top, list)
        and len(top) == len(tokens)
        and all(
            isinstance(entry, list)
            and all(
                isinstance(pair, list)
                and len(pair) == 2
                and isinstance(pair[0], str)
                and _number(pair[1])
                for pair in entry
            )
            for entry in top
        )
    )


def _history(entry: Any) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("text"), str)


def losses(
    doc: Document, selection: Selection, node: str | None, label: str, keys: tuple[str, ...]
) -> list[str]:
    """What exporting `selection` as `label` ("an OpenLoom file") leaves out or carries only
    in the "loom" field, as notes with counts ([] when nothing)."""
    notes: list[str] = []
    kept = set(selection.order)
    whole = select(doc, node, archived=True)
    deleted = sum(1 for node_id in whole.order if node_id not in kept)
    if deleted:
        notes.append(f"{deleted} deleted node(s) left out: {label} has no deleted state")
    counts: dict[str, int] = {}
    for node_id in selection.order:
        for key in carry(doc, node_id, keys):
            counts[key] = counts.get(key, 0) + 1
    if counts:
        listed = ", ".join(
            f"{_LABELS[k]} ({counts[k]} node{'' if counts[k] == 1 else 's'})"
            for k in keys
            if k in counts
        )
        notes.append(f'{listed} kept in each node\'s "{FIELD}" field, which only loom reads back')
    return notes
