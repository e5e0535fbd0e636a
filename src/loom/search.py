"""Finding nodes by text: substring or regex, over each node's segment or its whole branch."""

from __future__ import annotations

import re
from dataclasses import dataclass

from loom.document import Document
from loom.errors import UsageError


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
        # The pattern is what someone typed: a bad one is a usage error (exit 2).
        raise UsageError(f"bad regular expression {pattern!r}: {exc}") from None


# How far back into the ancestors a regex match may start in a branch search: a pattern's
# length bounds a literal match, but a regex could span any distance.
REGEX_REACH = 2000


def _ending_after(compiled: re.Pattern[str], window: str, own_start: int) -> re.Match[str] | None:
    """The first match in `window` that ends inside the node's own text (after `own_start`).

    Tries every start position in turn (not `finditer`, whose matches never overlap and
    could hide one that ends in the segment).
    """
    pos = 0
    while pos <= len(window):
        m = compiled.search(window, pos)
        if m is None:
            return None
        if m.end() > own_start or (m.start() >= own_start and m.end() == m.start()):
            return m
        pos = m.start() + 1
    return None


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
    completes it, not again at every descendant. A regex match may reach back at
    most REGEX_REACH characters into the ancestors. Offsets are then into the
    node's full text.
    """
    if not pattern:
        raise UsageError("empty search pattern")
    compiled = compile_pattern(pattern, regex=regex, ignore_case=ignore_case)
    peek = doc.peek  # a large document keeps no record it only read
    out: list[Match] = []
    if not branch:
        for node_id in doc.walk(include_archived=include_archived):
            m = compiled.search(peek(node_id).get("text", ""))
            if m:
                out.append(Match(node_id, m.start(), m.end(), m.group(0)))
                if limit is not None and len(out) >= limit:
                    break
        return out
    # Depth-first, each node carrying the last `reach` characters of its ancestors' text
    # and their total length: linear in the document, never rebuilding a full text.
    reach = len(pattern) - 1 if not regex else REGEX_REACH
    stack: list[tuple[str, str, int]] = [(r, "", 0) for r in reversed(doc.root_ids)]
    while stack:
        node_id, tail, before = stack.pop()
        rec = peek(node_id)
        if rec.get("archived") and not include_archived:
            continue
        segment = rec.get("text", "")
        window = tail + segment
        hit = _ending_after(compiled, window, len(tail)) if segment else None
        if hit is not None:
            offset = before - len(tail)  # where the window starts in the full text
            out.append(Match(node_id, offset + hit.start(), offset + hit.end(), hit.group(0)))
            if limit is not None and len(out) >= limit:
                break
        child_tail = window[-reach:] if reach > 0 else ""
        stack.extend(
            (c, child_tail, before + len(segment)) for c in reversed(rec.get("children", ()))
        )
    return out
