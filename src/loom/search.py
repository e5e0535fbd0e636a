"""Finding nodes by text: substring or regex, over each node's segment or its whole branch."""

from __future__ import annotations

import re
from dataclasses import dataclass

from loom.document import Document
from loom.errors import InvalidOperation


@dataclass(frozen=True)
class Match:
    node_id: str
    start: int  # offsets into the searched text (the segment, or the full branch text)
    end: int
    text: str  # the matched text


def compile_pattern(
    pattern: str, *, regex: bool = False, ignore_case: bool = False
) -> re.Pattern[str]:
    flags = re.IGNORECASE if ignore_case else 0
    try:
        return re.compile(pattern if regex else re.escape(pattern), flags)
    except re.error as exc:
        raise InvalidOperation(f"bad regular expression {pattern!r}: {exc}") from None


def search(
    doc: Document,
    pattern: str,
    *,
    regex: bool = False,
    ignore_case: bool = False,
    branch: bool = False,
    include_archived: bool = False,
    limit: int | None = None,
) -> list[Match]:
    """Nodes whose text matches, in document order, with the first match in each.

    With `branch`, a node matches when its full text does and the match ends
    inside its own segment, so a hit is reported once, at the node that
    completes it, not again at every descendant.
    """
    if not pattern:
        raise InvalidOperation("empty search pattern")
    compiled = compile_pattern(pattern, regex=regex, ignore_case=ignore_case)
    nodes = doc.nodes
    out: list[Match] = []
    if not branch:
        for node_id in doc.walk(include_archived=include_archived):
            m = compiled.search(nodes[node_id].get("text", ""))
            if m:
                out.append(Match(node_id, m.start(), m.end(), m.group(0)))
                if limit is not None and len(out) >= limit:
                    break
        return out
    # Walk depth-first carrying each node's prefix length; the full text is rebuilt per node
    # from its path, which stays linear in depth.
    for node_id in doc.walk(include_archived=include_archived):
        segment = nodes[node_id].get("text", "")
        if not segment:
            continue
        full = doc.full_text(node_id)
        own_start = len(full) - len(segment)
        for m in compiled.finditer(full):
            if m.end() > own_start and (m.end() > m.start() or m.start() >= own_start):
                out.append(Match(node_id, m.start(), m.end(), m.group(0)))
                break
        if limit is not None and len(out) >= limit:
            break
    return out
