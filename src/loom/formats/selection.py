"""What an exporter walks: the selected nodes, their ids in the foreign format, shared lookups."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from loom.document import Document
from loom.errors import InvalidOperation
from loom.formats.secrets import drop_secrets

# Stable namespace for ids an exporter has to invent, so re-exporting gives the same ids.
EXPORT_NAMESPACE = uuid.UUID("6f1d0a52-3f55-4d0e-9a43-2b8f1c7e5a10")


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
    # An older loom may have imported settings with a credential in them.
    return dict(drop_secrets(gen)[0]) if isinstance(gen, dict) else {}


def exported_record(doc: Document, node_id: str) -> dict[str, Any]:
    """A copy of a node's record for loom's own export formats: what an older loom kept of
    an import (meta.import, meta.gen) passes the secret filter on the way out."""
    rec = dict(doc.nodes[node_id])
    meta = rec.get("meta")
    if isinstance(meta, dict) and ("import" in meta or "gen" in meta):
        meta = dict(meta)
        for key in ("import", "gen"):
            if isinstance(meta.get(key), dict):
                meta[key] = drop_secrets(meta[key])[0]
        rec["meta"] = meta
    return rec


def model_of(doc: Document, node_id: str) -> str | None:
    gen = gen_of(doc, node_id)
    for key in ("model", "reported_model", "requested_model"):
        value = gen.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
