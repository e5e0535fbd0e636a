"""Token probabilities as a node records them: `meta.logprobs` (see docs/schema.md).

The shape is `{"source", "tokens": [...], "lp": [...], "top": [[[tok, lp], ...], ...]}`;
token `i` starts at the sum of the lengths of tokens `0..i-1` within the node's text.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from loom.document import Document, Node
from loom.errors import InvalidOperation, NotFound
from loom.journal import transaction

META_KEY = "logprobs"


class TokenChoice(NamedTuple):
    """The token at an offset: where it is, what was chosen, and what else was likely."""

    token_index: int  # in the node's token list
    start: int  # character offset of the token within the node's text
    token: str  # the chosen token
    alternatives: list[tuple[str, float]]  # recorded alternatives with their log-probabilities
    logprob: float | None = None  # of the chosen token


def of(doc: Document, node_id: str) -> dict[str, Any] | None:
    """The node's recorded token probabilities, if any."""
    probs = doc.node(node_id).record.get("meta", {}).get(META_KEY)
    return probs if isinstance(probs, dict) and probs.get("tokens") else None


def aligned(logprobs: dict[str, Any], text: str) -> bool:
    """Whether the tokens still spell `text` (an in-place edit leaves them stale)."""
    return "".join(logprobs.get("tokens", [])) == text


def starts(logprobs: dict[str, Any]) -> list[int]:
    """The character offset at which each token starts."""
    out, pos = [], 0
    for tok in logprobs.get("tokens", []):
        out.append(pos)
        pos += len(tok)
    return out


def token_at(logprobs: dict[str, Any], offset: int) -> int:
    """The index of the token covering character `offset`."""
    tokens = logprobs.get("tokens", [])
    end = sum(len(t) for t in tokens)
    if not 0 <= offset < end:
        raise InvalidOperation(
            f"offset must be within the node's text (0..{end - 1}), got {offset}"
        )
    return max(i for i, s in enumerate(starts(logprobs)) if s <= offset)


def absolute_offset(doc: Document, node_id: str, offset: int) -> int:
    """`offset` within the node's text; a negative one counts from the end (-1: the last
    character), as `split` counts."""
    return offset + len(doc.node(node_id).text) if offset < 0 else offset


def token_table(doc: Document, node_id: str) -> list[dict[str, Any]]:
    """Every recorded token of the node: its index, character offset, text, probability
    and how many alternatives were recorded for it."""
    import math

    probs = _aligned_probs(doc, node_id)
    lps = probs.get("lp", [])
    tops = probs.get("top") or []
    return [
        {
            "index": i,
            "offset": start,
            "token": token,
            "prob": math.exp(lps[i]) if i < len(lps) else None,
            "alternatives": len(tops[i]) if i < len(tops) else 0,
        }
        for i, (start, token) in enumerate(zip(starts(probs), probs["tokens"], strict=True))
    ]


def _aligned_probs(doc: Document, node_id: str) -> dict[str, Any]:
    node = doc.node(node_id)
    probs = of(doc, node.id)
    if probs is None and node.edited:
        raise InvalidOperation(
            f"node {node.id} was edited by hand since it was generated: its token "
            "probabilities went into its history with the old text (`loom history`)"
        )
    if probs is None:
        raise InvalidOperation(f"node {node.id} has no token probabilities recorded")
    if not aligned(probs, node.text):
        raise InvalidOperation(
            f"node {node.id} was edited since it was generated: its token probabilities no longer match its text"
        )
    return probs


def alternatives_at(doc: Document, node_id: str, offset: int) -> TokenChoice:
    """The token covering `offset` in the node's text and the alternatives recorded for it."""
    probs = _aligned_probs(doc, node_id)
    index = token_at(probs, offset)
    tops = probs.get("top") or []
    alternatives = [(str(t), float(lp)) for t, lp in (tops[index] if index < len(tops) else [])]
    lps = probs.get("lp", [])
    return TokenChoice(
        index,
        starts(probs)[index],
        probs["tokens"][index],
        alternatives,
        float(lps[index]) if index < len(lps) else None,
    )


def branch_from_alternative(
    doc: Document, node_id: str, offset: int, k: int, *, move_cursor: bool = True
) -> Node:
    """A new sibling of the node: its text up to the token at `offset`, then alternative `k`.

    `k` indexes `alternatives_at(...).alternatives` (0-based). The sibling records
    where it came from in `meta.alt_of` and `meta.alt`. One undoable step.
    """
    from loom import ops  # ops imports this module for split_logprobs

    node = doc.node(node_id)
    choice = alternatives_at(doc, node.id, offset)
    if not 0 <= k < len(choice.alternatives):
        raise NotFound(
            f"the token at offset {choice.start} has {len(choice.alternatives)} recorded alternative(s)"
        )
    token = choice.alternatives[k][0]
    meta = {"alt_of": node.id, "alt": {"offset": choice.start, "token": token}}
    with transaction(doc, "alt", f"branch from alternative {token!r} in {node.id}"):
        return ops.add_sibling(
            doc,
            node.id,
            node.text[: choice.start] + token,
            kind=node.kind,
            meta=meta,
            move_cursor=move_cursor,
        )


def split_logprobs(logprobs: dict[str, Any], at: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Partition token records at character offset `at`, keeping each half aligned with its text.

    A token straddling the cut is cut too: both pieces keep its log-probability and lose
    its alternatives (which were alternatives to the whole token).
    """
    tokens = list(logprobs.get("tokens", []))
    lps = list(logprobs.get("lp", []))
    tops = list(logprobs.get("top", [])) if "top" in logprobs else None
    offset = 0
    for i, tok in enumerate(tokens):
        if offset + len(tok) > at:
            cut = at - offset
            if cut > 0:  # straddles: split this token in two
                tokens[i : i + 1] = [tok[:cut], tok[cut:]]
                lps[i : i + 1] = [lps[i], lps[i]]
                if tops is not None:
                    tops[i : i + 1] = [[], []]
                i += 1
            break
        offset += len(tok)
    else:
        i = len(tokens)

    def part(sl: slice) -> dict[str, Any]:
        out = {**logprobs, "tokens": tokens[sl], "lp": lps[sl]}
        if tops is not None:
            out["top"] = tops[sl]
        return out

    return part(slice(0, i)), part(slice(i, None))
