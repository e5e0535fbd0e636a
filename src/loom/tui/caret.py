"""Moving a text cursor through a node's text: by character, word or token. Pure functions."""

from __future__ import annotations

import re
from typing import Any

from loom import logprobs

_WORD = re.compile(r"\S+")


def word_starts(text: str) -> list[int]:
    return [m.start() for m in _WORD.finditer(text)]


def step_char(text: str, at: int, step: int) -> int:
    return max(0, min(len(text), at + step))


def step_word(text: str, at: int, step: int) -> int:
    """The start of the next (step > 0) or previous word; the text's ends past the last."""
    starts = word_starts(text)
    if step > 0:
        return next((s for s in starts if s > at), len(text))
    return next((s for s in reversed(starts) if s < at), 0)


def split_point(text: str) -> int:
    """Where a split starts out: the word start nearest the middle (inside the text)."""
    starts = [s for s in word_starts(text) if 0 < s < len(text)]
    if not starts:
        return max(1, len(text) // 2) if len(text) > 1 else 0
    middle = len(text) / 2
    return min(starts, key=lambda s: abs(s - middle))


def token_starts(probs: dict[str, Any]) -> list[int]:
    return logprobs.starts(probs)


def step_token(probs: dict[str, Any], at: int, step: int) -> int:
    """The start of the token `step` tokens away from the one covering `at`."""
    starts = token_starts(probs)
    if not starts:
        return 0
    here = max(i for i, s in enumerate(starts) if s <= at) if at >= starts[0] else 0
    return starts[max(0, min(len(starts) - 1, here + step))]


def first_choice(probs: dict[str, Any]) -> int:
    """Where the alternatives cursor starts: the least likely token that has alternatives."""
    starts = token_starts(probs)
    tops = probs.get("top") or []
    lps = probs.get("lp") or []
    with_alts = [i for i in range(len(starts)) if i < len(tops) and tops[i]]
    if not with_alts:
        return starts[-1] if starts else 0
    return starts[min(with_alts, key=lambda i: lps[i] if i < len(lps) else 0.0)]
