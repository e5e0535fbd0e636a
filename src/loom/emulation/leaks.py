"""Frame leaks: the words emulation sent around the document showing up in the reply.

A small instruct model copies whatever scene it is given: the terminal frame comes
back as `<cmd>cat untitled.txt</cmd>`, a system prompt as "the document is empty", a
few-shot example as its own sentences. `Leaks(frame, prompt)` knows what to look for:

- the frame's tags (`<document>`, `<cmd>`), and chat-template tokens (`<|im_end|>`);
- its file-name-like words (`untitled.txt`);
- its phrases: five words in a row, two of them more than filler, or a whole short
  frame text ("Continue the text.");

and ignores any of them the document itself contains, so a document about documents
keeps its words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PHRASE_WORDS = 5  # a frame phrase is this many words in a row…
MIN_CONTENT_WORDS = 2  # …with at least this many that are not filler words

_WORD = re.compile(r"[^\W_]+(?:['’.][^\W_]+)*")
_TAG = re.compile(r"</?([A-Za-z][\w-]{0,30})>")
# Chat-template control tokens a server may let through as text.
_SPECIAL = re.compile(
    r"<\|[^|<>\s]{1,30}\|>|<(?:start|end)_of_turn>|\[/?INST\]|<</?SYS>>|</s>(?!\w)"
)
# Common words that make a phrase ordinary (cleanup's echo check shares them) ("in the middle of the"), not a frame's own.
_FILLER = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "nor",
        "so",
        "yet",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "into",
        "onto",
        "over",
        "under",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "done",
        "have",
        "has",
        "had",
        "having",
        "it",
        "its",
        "it's",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "then",
        "than",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "i",
        "me",
        "my",
        "we",
        "us",
        "our",
        "you",
        "your",
        "he",
        "him",
        "his",
        "she",
        "her",
        "they",
        "them",
        "their",
        "not",
        "no",
        "if",
        "else",
        "all",
        "any",
        "each",
        "every",
        "some",
        "such",
        "only",
        "just",
        "also",
        "very",
        "too",
        "more",
        "most",
        "much",
        "many",
        "one",
        "two",
        "can",
        "could",
        "will",
        "would",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "let",
        "s",
        "t",
    ]
)


def words(text: str) -> list[tuple[str, int]]:
    """The words of `text` in lower case with straight apostrophes, and where each starts."""
    return [(m.group(0).lower().replace("’", "'"), m.start()) for m in _WORD.finditer(text)]


def _grams(seq: Sequence[str], size: int) -> set[tuple[str, ...]]:
    return {tuple(seq[i : i + size]) for i in range(len(seq) - size + 1)}


@dataclass(frozen=True)
class Leak:
    start: int  # where in the text it begins
    what: str  # the leaked piece, for the record


class Leaks:
    """What of `frame` (the texts sent besides the document) would be a leak after `prompt`."""

    def __init__(self, frame: Iterable[str], prompt: str) -> None:
        frame = [f for f in frame if f]
        own = [w for w, _ in words(prompt)]
        tags = {t.lower() for text in frame for t in _TAG.findall(text)}
        tags -= {t.lower() for t in _TAG.findall(prompt)}
        self._tag = (
            # A tag cut short by the token limit at the very end ("<continuation") counts too.
            re.compile(r"</?(?:" + "|".join(map(re.escape, sorted(tags))) + r")(?:>|\Z)", re.I)
            if tags
            else None
        )
        self._special = not _SPECIAL.search(prompt)
        phrases: dict[int, set[tuple[str, ...]]] = {}
        for text in frame:
            bare = _TAG.sub(" ", text)
            found = [w for w, _ in words(bare)]
            if 2 <= len(found) < PHRASE_WORDS:  # a short frame text leaks whole…
                stems = tuple(w.split(".")[0] for w in found)  # …"cat untitled." cut short too
                phrases.setdefault(len(found), set()).update({tuple(found), stems})
            for line in bare.splitlines():
                seq = [w for w, _ in words(line)]
                for gram in _grams(seq, PHRASE_WORDS):
                    if sum(w not in _FILLER for w in gram) >= MIN_CONTENT_WORDS:
                        phrases.setdefault(PHRASE_WORDS, set()).add(gram)
            for word in found:
                if "." in word or "_" in word:  # a file name or identifier: distinctive alone
                    phrases.setdefault(1, set()).add((word,))
        # The document's own words are never a leak.
        self._phrases = {
            size: grams - _grams(own, size) if size > 1 else {g for g in grams if g[0] not in own}
            for size, grams in phrases.items()
        }
        self._phrases = {size: grams for size, grams in self._phrases.items() if grams}

    def __bool__(self) -> bool:
        return bool(self._tag or self._special or self._phrases)

    def find(self, text: str) -> Leak | None:
        """The first leak in `text`, if any."""
        hits: list[Leak] = []
        if self._tag is not None and (m := self._tag.search(text)):
            hits.append(Leak(m.start(), m.group(0)))
        if self._special and (m := _SPECIAL.search(text)):
            hits.append(Leak(m.start(), m.group(0)))
        if self._phrases:
            found = words(text)
            seq = [w for w, _ in found]
            done = False
            for i in range(len(seq)):
                for size, grams in self._phrases.items():
                    if tuple(seq[i : i + size]) in grams:
                        end = found[i + size - 1][1] + len(found[i + size - 1][0])
                        hits.append(Leak(found[i][1], text[found[i][1] : end]))
                        done = True
                        break
                if done:
                    break
        return min(hits, key=lambda h: h.start) if hits else None
