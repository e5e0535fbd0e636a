"""Cleaning continuations produced by emulating a base model with a chat model.

A chat model asked to continue a document answers like an assistant: it opens with
"Sure, here's the continuation:", wraps the text in quotes or a code fence, repeats
the end of the prompt, drops the leading space, and closes with "Let me know if…".
This module turns such a reply into text that can be appended to the document as it
stands, and says whether the reply is usable at all.

The work is a pipeline of small pure steps. Each step takes the fixed facts about the
seam (`Seam`) and the text so far (`Draft`) and returns a new `Draft`, recording what
it changed. Which steps run is data: `PROFILES` maps each emulation method to step
names from `STEPS`, and `CleanOptions.steps` replaces that list. After the steps the
checks of the profile give a verdict, so the caller can retry with the next method.

False positives are worse than misses (a stripped line of real dialogue is silently
lost; a kept preamble is visible and the verdict flags it), so every pattern is
anchored at the seam or the very end, and the weaker ones are switched off when the
prompt shows dialogue or a speaker turn.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from loom.emulation.leaks import Leaks
from loom.generation.context import Context


class _LazyPattern:
    """A regex compiled on first use: importing cleanup (~130 patterns) would otherwise cost
    ~70 ms on every `loom gen`, even for base models that use three of them."""

    __slots__ = ("_args", "_compiled")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        self._args = (pattern, flags)
        self._compiled: re.Pattern[str] | None = None

    def __getattr__(self, name: str) -> Any:
        if self._compiled is None:
            self._compiled = re.compile(*self._args)
        return getattr(self._compiled, name)


def _lazy(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return cast("re.Pattern[str]", _LazyPattern(pattern, flags))


Verdict = Literal[
    "ok", "preamble", "meta", "refusal", "leak", "echo", "language", "empty", "mostly_overlap"
]
Op = dict[str, object]

# Methods whose reply is a separate chat message rather than text produced in place.
CHAT_METHODS = frozenset({"system", "fewshot"})
LENGTH_REASONS = frozenset({"length", "max_tokens"})


# ---------------------------------------------------------------------------
# Before the request
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """The prompt split for sending: `text + rewound + trailing` is the original."""

    text: str  # what the model is asked to continue
    trailing: str = ""  # whitespace cut from the end (it hurts tokenization), restored later
    rewound: str = ""  # a partial last word held back, with the whitespace before it

    @property
    def original(self) -> str:
        return self.text + self.rewound + self.trailing


# The last word, whole: "don't" and "well-kno" are rewound entirely, not from the apostrophe.
_REWIND_WORD = _lazy(r"(?<![\w'’-])(?:[^\W_]+['’-])*[^\W_]+\Z")


def prepare_prompt(prompt: str, *, rewind: bool = False) -> Prepared:
    """Strip trailing whitespace (remembered) and optionally hold back the last word.

    Rewinding lets the model re-spell a word cut mid-way ("unbeliev"); cleanup drops
    the repeated part. Nothing is rewound after whitespace, in scripts written without
    spaces, or when the word is the whole prompt.
    """
    text = prompt.rstrip()
    trailing = prompt[len(text) :]
    if not rewind or trailing:
        return Prepared(text, trailing)
    m = _REWIND_WORD.search(text)
    if m is None or any(_no_space_script(c) for c in m.group(0)):
        return Prepared(text, trailing)
    kept = text[: m.start()].rstrip()
    if not kept:
        return Prepared(text, trailing)
    return Prepared(kept, trailing, text[len(kept) :])


# ---------------------------------------------------------------------------
# Character classes and context
# ---------------------------------------------------------------------------

# Scripts written without spaces between words: no seam space, no word trimming.
_NO_SPACE_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3000, 0x303F),  # CJK punctuation
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x31FF),  # Bopomofo, Katakana extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility
    (0xFF00, 0xFFEF),  # full-width forms
    (0x20000, 0x2FA1F),  # CJK extensions B-F
)


def _no_space_script(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _NO_SPACE_RANGES)


_OPEN_AFTER = frozenset("([{“‘«「『-–—/\\@#$")  # no space after these
_ATTACH_BEFORE = frozenset(".,;:!?)]}%…”’»」』-–—/")  # no space before these
_CONTRACTION = _lazy(r"(?:['’](?:s|t|re|ve|ll|d|m)|n['’]t)(?![^\W_])", re.IGNORECASE)
# A script or transcript line waiting for its speaker's words: "Assistant:", "Dr. Reyes:".
_SPEAKER_TURN = _lazy(r"(?:\A|\n)[ \t]*[^\W\d][\w.'’()-]*(?:[ \t][\w.'’()-]+){0,3}:\Z")


def quote_open(text: str) -> bool:
    """Whether the last line of `text` leaves a quotation open."""
    line = text[text.rfind("\n") + 1 :]
    return (
        line.count('"') % 2 == 1
        or line.count("“") > line.count("”")
        or line.count("«") > line.count("»")
        or line.count("「") > line.count("」")
    )


def in_dialogue(prompt: str) -> bool:
    """Whether the prompt ends inside speech: an open quote or a speaker label ("Bob:").

    There a reply such as "Sure, I'll be there." is the story, not an assistant.
    """
    text = prompt.rstrip()
    return quote_open(text) or bool(_SPEAKER_TURN.search(text))


def _words(text: str) -> int:
    return len(text.split())


# ---------------------------------------------------------------------------
# The pipeline's data
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CleanOptions:
    min_overlap_chars: int = 12  # an echo of the prompt's end counts from this length…
    min_overlap_words: int = 3  # …or from this many words…
    sentence_overlap_words: int = 2  # …or this many when it starts a sentence of the prompt
    mostly_overlap: float = 0.8  # share of the reply that was echo before it is rejected
    trim_on_length: bool = False  # cut a word left unfinished by the token limit
    steps: tuple[str, ...] | None = None  # replaces the method's step list


@dataclass(frozen=True)
class Seam:
    """Fixed facts about where the continuation joins the document."""

    prompt: str  # the document text up to the seam, as the user has it
    prepared: Prepared
    method: str
    finish_reason: str | None = None
    options: CleanOptions = field(default_factory=CleanOptions)
    dialogue: bool = False
    leaks: Leaks | None = None  # what of the frame sent around the prompt would be a leak


@dataclass(frozen=True)
class Draft:
    text: str
    ops: tuple[Op, ...] = ()

    def did(self, op: str) -> bool:
        return any(o["op"] == op for o in self.ops)

    def then(self, op: str, text: str, **details: object) -> Draft:
        return Draft(text, (*self.ops, {"op": op, **details}))


@dataclass(frozen=True)
class Cleaned:
    text: str  # what to append to the document
    raw: str  # what the model sent
    ops: tuple[Op, ...]  # what was changed, in order
    verdict: Verdict
    method: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    def to_record(self) -> dict[str, object]:
        """The cleanup part of a node's generation record (raw kept only if it differs)."""
        out: dict[str, object] = {"verdict": self.verdict, "ops": [dict(o) for o in self.ops]}
        if self.raw != self.text:
            out["raw"] = self.raw
        return out


Step = Callable[[Seam, Draft], Draft]
Check = Callable[[Seam, Draft], Verdict | None]


# ---------------------------------------------------------------------------
# Preambles
# ---------------------------------------------------------------------------

_A = "['’]"
_ACK = (
    r"(?:sure(?:\s+thing)?|certainly|of\s+course|absolutely|okay|ok|alright|all\s+right"
    r"|got\s+it|gladly|no\s+problem|understood|yes|great|perfect)"
)
_FILLER_CORE = (
    rf"(?:(?:i{_A}d|i\s+would)\s+(?:be\s+)?(?:happy|glad|delighted|love)\s+to(?:\s+help)?"
    r"|(?:happy|glad)\s+to\s+help|what\s+an?\s+[^.!?\n]{1,60}"
    r"|(?:this\s+is\s+)?(?:an?\s+|such\s+an?\s+)?(?:great|lovely|wonderful|intriguing"
    r"|interesting|fascinating|beautiful|compelling)\s+(?:start|opening|premise|story|passage"
    r"|piece|text|scene|beginning)[^.!?\n]{0,60})"
)
# Possessive whitespace (`*+`, `++`): a failed match must not retry every split of a
# long run of spaces, which is quadratic.
_HEAD = rf"\A\s*+(?:{_ACK}[,.!]*\s++)?(?:{_FILLER_CORE}[.!]+\s++){{0,2}}"
_HERE = rf"(?:here{_A}s|here\s+is|here\s+are|below\s+is|this\s+is)\s+"
_ADJ = (
    r"(?:(?:a|an|the|your|my|one)\s+)?(?:(?:possible|natural|seamless|short|brief|quick"
    r"|suggested|potential|creative|smooth)\s+)*"
)
_NOUN_CONT = r"(?:continuation|continued\s+(?:text|story|version|passage|draft))"
_NOUN_NEXT = (
    r"(?:rest\s+of\b[^\n:]{0,60}?"
    r"|next\s+(?:part|section|paragraph|passage|chapter|scene|bit|lines?|few\s+lines|portion))"
)
_NOUN_WEAK = r"(?:story|text|passage|excerpt|draft|completion|version|piece|response|output)"
_CONT = r"(?:continu(?:ing|ation|ed)|resuming|picking\s+up)"
_CONT_TAIL = (
    r"(?:\s+(?:of|from|with|where|on|after)\b[^\n:.…]{0,80}"
    r"|\s+(?:the|your|my|this)\s+(?:story|text|passage|narrative|document|piece|poem|essay"
    r"|scene|chapter|tale|draft|thread)\b[^\n:.…]{0,60})?"
)
_WILL_LEAD = (
    rf"(?:i{_A}ll|i\s+will|let\s+me|let{_A}s|i\s+can|i{_A}m\s+going\s+to|i{_A}ve|i\s+have"
    rf"|(?:i{_A}d|i\s+would)\s+(?:be\s+)?(?:happy|glad|delighted|love)\s+to)"
)
_WILL_VERB = (
    r"(?:continu\w*|pick\s+up|carry\s+on|keep\s+going|extend|resume"
    r"|write\s+(?:the\s+)?(?:next|rest|more|a\s+continuation))"
)
_RULE = r"(?:[ \t]*(?:-{3,}|\*{3,}|_{3,}|={3,})[ \t]*(?:\n|\Z)\s*)?"
_FLAGS = re.IGNORECASE


def _rx(body: str) -> re.Pattern[str]:
    return _lazy(body + _RULE, _FLAGS)


_ENDS = r"\b[^\n:]{0,120}?(?:[:：]|\.{3}|…|[.!](?=[ \t]*\n))[ \t]*\s*"

# Strong: a label or "here's the continuation"; stripped even when the prompt is dialogue.
_PREAMBLE_STRONG = (
    _rx(_HEAD + rf"[#>*_\s\[(]*{_CONT}{_CONT_TAIL}[*_\])]*\s*(?:[:：]|\.{{3}}|…)[*_\])]*[ \t]*\s*"),
    _rx(rf"\A\s*+[\[(]\s*{_CONT}[^\])\n]{{0,60}}[\])][ \t]*\n\s*"),
    _rx(rf"\A\s*+#{{1,6}}[ \t]*{_CONT}\b[^\n]{{0,60}}\n\s*"),
    # A title line marked as continued: "**The Lighthouse (continued)**".
    _rx(
        r"\A\s*+(?:\*\*|__|#{1,6}[ \t]*)[^\n]{1,80}?[(\[](?:continued|cont(?:['’]d|\.))[)\]][*_]*[ \t]*\n\s*"
    ),
    _rx(_HEAD + _HERE + _ADJ + _NOUN_CONT + _ENDS),
    # Chinese: "好的,以下是续写:" (续写 means "continued writing", never story text).
    _rx(r"\A\s*+(?:好的|当然|没问题|可以)?[,，!！。]?\s*+[^\n:：]{0,12}续写[^\n:：]{0,20}[:：]\s*"),
)
# Weak: plausible as speech ("Here's the rest of it: we ran."), so off in dialogue, and
# most need a colon or a line break after them.
_PREAMBLE_WEAK = (
    _rx(_HEAD + _HERE + _ADJ + _NOUN_NEXT + _ENDS),
    _rx(
        _HEAD
        + _HERE
        + r"(?:how|what)\b[^\n:]{0,60}?\b(?:continu\w*|next|unfold\w*)\b[^\n:]{0,40}[:：…][ \t]*\s*"
    ),
    _rx(_HEAD + _HERE + _ADJ + _NOUN_WEAK + r"\b[^\n:]{0,120}?[:：][ \t]*\n\s*"),
    _rx(_HEAD + r"here\s+(?:you\s+go|it\s+is|goes|we\s+go)[!.:…]*[ \t]*\n\s*"),
    _rx(
        _HEAD + _WILL_LEAD + rf"\s+[^\n.!?:]{{0,80}}?\b{_WILL_VERB}\b[^\n.!?:]{{0,120}}"
        r"(?:[:：][ \t]*|[.!…]+[ \t]*\n)\s*"
    ),
    _rx(rf"\A\s*+{_ACK}[,.!]*(?:[ \t]+{_FILLER_CORE}[.!]+)*[ \t]*\n\s*"),
    # Japanese: "はい、続きです:" / "以下は続きです。" on its own line.
    _rx(
        r"\A\s*+(?:はい|もちろん|承知しました|わかりました)?[、,!！。]?\s*+(?:以下は|こちらは)?"
        r"[^\n:：。]{0,12}続き(?:です|になります)?[^\n:：。]{0,12}[:：。][ \t]*\n\s*"
    ),
)
# Left over at the start after cleaning, these mean the reply is still an assistant talking.
_ASSISTANT_VOICE = _lazy(
    rf"\A\s*+(?:(?:sure|certainly|of\s+course|absolutely|gladly|okay|alright)!\s"
    rf"|(?:{_ACK}[,.!]*\s+)?(?:(?:i{_A}d|i\s+would)\s+(?:be\s+)?(?:happy|glad|love)\s+to\b"
    rf"|i\s+can\s+(?:help|continue|do\s+that)\b|i{_A}ll\s+(?:continue|pick\s+up|write|help|assist)\b"
    # Small instruct models answer a system-framed document with a service greeting.
    rf"|(?:i{_A}m|i\s+am)\s+here\s+to\s+(?:help|assist)\b|how\s+(?:can|may)\s+i\s+(?:help|assist)\b))",
    _FLAGS,
)


def find_preamble(text: str, *, dialogue: bool, strong_only: bool = False) -> re.Match[str] | None:
    """The assistant preamble at the start of `text`, if any."""
    patterns = _PREAMBLE_STRONG if dialogue or strong_only else _PREAMBLE_STRONG + _PREAMBLE_WEAK
    for rx in patterns:
        m = rx.match(text)
        if m and m.end() > 0:
            return m
    return None


def strip_preamble(seam: Seam, draft: Draft) -> Draft:
    """Drop "Sure, here's the continuation:" and its kin, repeatedly, at the start only."""
    text, removed = draft.text, ""
    for _ in range(4):  # "Sure!\n\n**Continuation:**\n\n---\n" comes in layers
        m = find_preamble(text, dialogue=seam.dialogue)
        if m is None:
            break
        removed += m.group(0)
        text = text[m.end() :]
    if not removed:
        return draft
    # The reply's own leading whitespace belonged to the preamble's layout.
    stripped = text.lstrip()
    removed += text[: len(text) - len(stripped)]
    return draft.then("strip_preamble", stripped, removed=removed)


# ---------------------------------------------------------------------------
# Wrappers: tags, code fences, quotes
# ---------------------------------------------------------------------------

_TAG = _lazy(
    r"\A\s*+<(continuation|document|text|output|response)>\n?(.*?)\n?(?:</\1>\s*)?\Z",
    re.DOTALL | re.IGNORECASE,
)
# Matched from the start of a blank run only, possessively: a long run of spaces is scanned once.
_ANY_FRAMING_TAG = _lazy(
    r"(?<![ \t])[ \t]*+</?(?:continuation|document|text|output|response)>[ \t]*", _FLAGS
)
_STRAY_CLOSE_TAG = _lazy(r"\n?</(?:continuation|document|text|output|response)>\s*\Z", _FLAGS)


def _tag_gap(m: re.Match[str]) -> str:
    """What stands where a framing tag was cut: the space it sat in when words are on both
    sides ("fox</document> the" → "fox the"), else nothing."""
    text, start, end = m.string, m.start(), m.end()
    between_words = start > 0 and end < len(text) and not text[start - 1].isspace()
    between_words = between_words and not text[end].isspace()
    gap = m.group(0)
    if not between_words or gap.strip() == gap:
        return ""
    trailing = gap[len(gap.rstrip()) :]
    return trailing or gap[: len(gap) - len(gap.lstrip())]


def strip_tags(seam: Seam, draft: Draft) -> Draft:
    """Unwrap <continuation>…</continuation>: the framings show documents and replies in tags.

    Any framing tag left elsewhere is cut out too; never when the document itself has
    markup, where tags are content.
    """
    if "<" in seam.prompt[-500:]:
        return draft
    text, tag = draft.text, None
    if (m := _TAG.match(text)) is not None:
        text, tag = m.group(2), m.group(1).lower()
    if (m2 := _STRAY_CLOSE_TAG.search(text)) is not None:
        text = text[: m2.start()]
    text = _ANY_FRAMING_TAG.sub(_tag_gap, text)
    if text == draft.text:
        return draft
    return draft.then("strip_tags", text, tag=tag) if tag else draft.then("strip_tags", text)


_FENCE_OPEN = _lazy(r"\A\s*+```[\w+#.-]*[ \t]*\n")


def strip_fences(seam: Seam, draft: Draft) -> Draft:
    """Remove a code fence wrapped around the whole reply.

    Kept when the document itself uses fenced blocks and is outside one: there a
    reply that is one fenced block is likely what the document wants next.
    """
    opened = _FENCE_OPEN.match(draft.text)
    if opened is None:
        return draft
    fences = seam.prompt.count("```")
    inside_block = fences % 2 == 1
    if fences and not inside_block and not draft.did("strip_preamble"):
        return draft
    body = draft.text[opened.end() :]
    if body.rstrip().endswith("```"):
        body = body.rstrip()[:-3].rstrip(" \t")
        body = body[:-1] if body.endswith("\n") else body
    elif not inside_block and fences:
        return draft
    return draft.then("strip_fences", body, lang=opened.group(0).strip().strip("`") or None)


_WRAP_PAIRS = (('"', '"'), ("“", "”"))
_SPEECH_END = _lazy(
    r"(?:[:,;—–-]|\b(?:said|says|say|asked|asks|replied|replies|whispered|whispers|shouted"
    r"|shouts|called|cried|wrote|writes|read|reads|answered|added|muttered|began|continued"
    r"|yelled|murmured|exclaimed|declared|announced|sang|prayed|typed|texted))\s*\Z",
    _FLAGS,
)


def strip_quotes(seam: Seam, draft: Draft) -> Draft:
    """Remove quotation marks wrapped around the whole reply.

    A reply that is one quoted span is often legitimate ("He whispered" → "Run."), so
    it is unwrapped only after a stripped preamble, or when it is long and the prompt
    does not lead into speech.
    """
    text = draft.text.strip()
    for open_q, close_q in _WRAP_PAIRS:
        if len(text) < 3 or text[0] != open_q or text[-1] != close_q:
            continue
        inner = text[1:-1]
        if open_q in inner or close_q in inner:
            return draft
        after_preamble = draft.did("strip_preamble")
        leads_to_speech = seam.dialogue or bool(_SPEECH_END.search(seam.prompt.rstrip()[-40:]))
        if after_preamble or (not leads_to_speech and len(inner) >= 40):
            return draft.then("strip_quotes", inner, quote=open_q + close_q)
    return draft


# ---------------------------------------------------------------------------
# Closing chatter
# ---------------------------------------------------------------------------

# Whole-line sign-offs: only these exact forms, so a letter's "I hope this helps you
# decide." survives.
_SIGNOFF = (
    r"(?:i\s+)?hope\s+(?:this|that|it)\s+(?:helps|works(?:\s+for\s+you)?"
    r"|is\s+what\s+you\s+(?:wanted|were\s+looking\s+for))"
    r"(?:\s+with\s+your\s+(?:story|writing|project|piece|text))?"
    r"|happy\s+(?:writing|reading)"
    r"|[(\[]\s*end\s+of\s+(?:the\s+)?(?:continuation|excerpt|passage|text)\s*[)\]]"
)
# Assistant phrasings that are sign-offs only when they talk about the writing itself
# ("I've kept the letter all these years." is a story's last line).
_OFFER = (
    r"(?:let\s+me\s+know|would\s+you\s+like|do\s+you\s+want|shall\s+i|should\s+i|want\s+me\s+to"
    r"|if\s+you(?:['’]d|\s+would)?\s+like|i\s+can\s+(?:also|continue|keep)|feel\s+free\s+to"
    r"|i(?:['’]ve|\s+have)?\s+(?:aimed|tried|sought|attempted|kept|maintained|preserved|focused)"
    r"|i\s+hope\s+you\s+(?:enjoy|like)|note:|this\s+continuation|the\s+continuation)"
)
_META = (
    r"(?:continu\w*|more|further|expand\w*|adjust\w*|chang\w*|revis\w*|modif\w*|tweak\w*"
    r"|next\s+(?:part|chapter|section|scene)|another\s+(?:version|take|direction)"
    r"|rest\s+of\s+the\s+\w+|keep\s+going|different\s+direction|tone|style|voice"
    r"|atmosphere|pacing|original\s+(?:text|story|passage)"
    r"|(?:your|the)\s+(?:story|text|passage|writing|piece|draft))"
)
_CHATTER = _lazy(
    r"\n[ \t]*+(?:(?:-{3,}|\*{3,}|_{3,})[ \t]*\n\s*+)?[*_(\[]*"
    rf"(?:(?:{_SIGNOFF})[!.…]*[*_)\]]*|{_OFFER}\b[^\n\"“”]{{0,160}}?\b{_META}\b[^\n\"“”]*+)"
    r"[ \t]*+\s*+\Z",
    _FLAGS,
)
_TRAILING_RULE = _lazy(r"\n[ \t]*+(?:-{3,}|\*{3,}|_{3,})\s*+\Z")


_GLUED_ELLIPSIS = _lazy(r"\A(?:\.{3}|…)(?=[^\W\d_])")


def strip_ellipsis(seam: Seam, draft: Draft) -> Draft:
    """Drop the "..." chat models glue to the front of a continuation ("...he found").

    Only when glued to a letter: "... and then laughed" is the writer's own pause.
    """
    m = _GLUED_ELLIPSIS.match(draft.text)
    if m is None:
        return draft
    return draft.then("strip_ellipsis", draft.text[m.end() :], removed=m.group(0))


def strip_closing(seam: Seam, draft: Draft) -> Draft:
    """Drop assistant sign-offs ("Let me know if you'd like more!") in their own paragraph."""
    text = draft.text
    for _ in range(3):  # sign-offs come in several paragraphs, sometimes after a rule
        m = _CHATTER.search(text) or (_TRAILING_RULE.search(text) if text != draft.text else None)
        if m is None or not text[: m.start()].strip():
            break
        text = text[: m.start()].rstrip()
    if text == draft.text:
        return draft
    return draft.then("strip_closing", text, removed=draft.text[len(text) :])


# ---------------------------------------------------------------------------
# The seam: echoes, rewound words, whitespace
# ---------------------------------------------------------------------------

_FOLD = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "\u00a0": " "})


def _fold(text: str) -> tuple[str, list[int]]:
    """Whitespace runs as one space, curly quotes as straight, letters in lower case
    (an echo may re-capitalise: "The Soup was hot."), with each char's origin."""
    out: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text.translate(_FOLD)):
        if ch.isspace():
            if out and out[-1] == " ":
                continue
            ch = " "
        elif len(lower := ch.lower()) == 1:
            ch = lower
        out.append(ch)
        origin.append(i)
    return "".join(out), origin


_OPEN_QUOTES = frozenset("\"'“‘«")


def overlap(prompt: str, output: str, options: CleanOptions = CleanOptions()) -> int:
    """How many leading characters of `output` repeat the end of `prompt`.

    The repeated part must end exactly at the prompt's end and start at a word
    boundary of the prompt; whitespace and quote style may differ. Returns 0 below the
    minimum length, so short coincidences ("and the") survive.
    """
    p, p_origin = _fold(prompt.rstrip())
    lead = len(output) - len(output.lstrip())
    if output[lead : lead + 1] in _OPEN_QUOTES and prompt.rstrip()[-1:] not in _OPEN_QUOTES:
        lead += 1  # '"The storm had passed…' wraps an echo in a quote the prompt did not open
    o, o_origin = _fold(output[lead:])
    if not p or not o:
        return 0
    # Smallest start first = longest overlap; startswith stops at the first difference.
    for start in range(max(0, len(p) - len(o)), len(p)):
        if p[start] != o[0] or (start and p[start - 1].isalnum()):
            continue
        if not o.startswith(p[start:]):
            continue
        if prompt.rstrip()[p_origin[start]] != output[lead + o_origin[0]]:
            continue  # "merrily, merrily," after "Merrily, merrily," is a refrain, not a re-typed echo
        echoed = prompt.rstrip()[p_origin[start] :]
        words = _words(echoed)
        at_sentence = start == 0 or re.search(
            r"(?:[.!?][\"')\]]*\s|\n)\Z", prompt[: p_origin[start]]
        )
        if (
            len(echoed) >= options.min_overlap_chars
            or words >= options.min_overlap_words
            or (at_sentence and words >= options.sentence_overlap_words)
        ):
            matched = len(p) - start
            end = o_origin[matched] if matched < len(o) else len(output) - lead
            return lead + end
    return 0


def drop_overlap(seam: Seam, draft: Draft) -> Draft:
    """Remove the reply's repetition of the prompt's last words (again, if it echoed twice)."""
    for _ in range(3):
        n = overlap(seam.prepared.text, draft.text, seam.options)
        if not n:
            break
        # Cut inside a word ("…unexpec|ted"): the echo shows the word goes on, so no seam space.
        mid_word = draft.text[n - 1].isalnum() and draft.text[n : n + 1].isalnum()
        details: dict[str, object] = {"removed": draft.text[:n]}
        if mid_word:
            details["mid_word"] = True
        draft = draft.then("drop_overlap", draft.text[n:], **details)
    # The list item the prompt opened ("…\n3."), numbered again by the reply ("3. Camera").
    marker = _OPEN_ITEM.search(seam.prepared.text)
    if marker and (m := re.match(rf"\s*{re.escape(marker.group(1))}[ \t]+", draft.text)):
        draft = draft.then("drop_overlap", draft.text[m.end() :], removed=m.group(0))
    return draft


_OPEN_ITEM = _lazy(r"(?:\A|\n)[ \t]*(\d{1,3}[.)]|[-*•])\Z")


def drop_rewound(seam: Seam, draft: Draft) -> Draft:
    """Drop the part of the reply that re-spells the word held back by `prepare_prompt`."""
    word = seam.prepared.rewound.lstrip()
    if not word:
        return draft
    body = draft.text.lstrip()
    if body[: len(word)].lower() == word.lower():
        removed = draft.text[: len(draft.text) - len(body) + len(word)]
        return draft.then("drop_rewound", draft.text[len(removed) :], removed=removed)
    # The model chose another word; the held-back fragment stays in the document.
    return draft.then("rewind_mismatch", draft.text, rewound=seam.prepared.rewound)


def restore_trailing(seam: Seam, draft: Draft) -> Draft:
    """Reconcile the reply's leading whitespace with what the prompt ended in.

    The document keeps its trailing whitespace, so a reply that starts with the same
    whitespace (the usual completion " word" after "Hello ") must not double it.
    """
    trailing = seam.prepared.trailing
    if not trailing or not draft.text[:1].isspace():
        return draft
    body = draft.text.lstrip()
    lead = draft.text[: len(draft.text) - len(body)]
    if lead.startswith(trailing):
        keep = lead[len(trailing) :]
    elif lead.count("\n") > trailing.count("\n"):
        # A stronger break than the prompt's (a new paragraph after "word "): keep the rest.
        keep = "\n" * (lead.count("\n") - trailing.count("\n")) + lead[lead.rfind("\n") + 1 :]
    elif trailing.endswith("\n") and "\n" not in lead and seam.method in CHAT_METHODS:
        keep = lead  # a chat model saw the newline: this is the new line's indentation
    else:
        keep = ""
    if keep == lead:
        return draft
    return draft.then("restore_trailing", keep + body, replaced=lead, kept=keep)


def _needs_space(prompt: str, text: str) -> bool:
    """Whether `text` starts a new word after `prompt`, which ends in a non-space."""
    prev, nxt = prompt[-1], text[0]
    if _no_space_script(prev) or _no_space_script(nxt) or prev in _OPEN_AFTER:
        return False
    if prev in "\"'":
        before = prompt[-2] if len(prompt) > 1 else " "
        if before.isspace() or before in _OPEN_AFTER or (prev == '"' and quote_open(prompt)):
            return False  # the prompt ends on an opening quote
    if nxt in _ATTACH_BEFORE or _CONTRACTION.match(text):
        return False
    # A straight double quote opens speech unless the prompt left one open.
    return not (nxt == '"' and quote_open(prompt))


def seam_space(seam: Seam, draft: Draft) -> Draft:
    """Insert the space chat replies lose when the prompt ended mid-line on a word."""
    text, prompt = draft.text, seam.prompt
    if not text or not prompt or text[0].isspace() or prompt[-1].isspace():
        return draft
    if draft.did("drop_rewound") or not _needs_space(prompt, text):
        return draft
    if any(o["op"] == "drop_overlap" and o.get("mid_word") for o in draft.ops):
        return draft
    return draft.then("insert_space", " " + text)


def drop_prefill(seam: Seam, draft: Draft) -> Draft:
    """Drop the open assistant turn sent back in front of its continuation.

    llama.cpp does that when it answers without streaming; the turn is the document,
    which is already there.
    """
    sent = seam.prepared.text
    if len(sent) < 2 or not draft.text.startswith(sent):
        return draft
    return draft.then("drop_prefill", draft.text[len(sent) :], chars=len(sent))


# ---------------------------------------------------------------------------
# Frame leaks
# ---------------------------------------------------------------------------


_DANGLING = "\"'“‘«([{<`*_#>-–—"


def _kept_before(text: str, at: int) -> str | None:
    """The text before a cut at `at`, without what dangles at its end (an opening quote);
    None when too little is left to keep: fewer than two words and no sentence end."""
    kept = text[:at].rstrip()
    while kept and kept[-1] in _DANGLING:
        kept = kept[:-1].rstrip()
    words = re.findall(r"[^\W_]+", kept)
    if len(words) >= 2 or (words and re.search(r"[.!?…]", kept)):
        return kept
    return None


def cut_leak(seam: Seam, draft: Draft) -> Draft:
    """Cut the reply where the frame starts showing through, when real text comes first.

    A leak with less before it is left for the verdict (`check_leak`), which rejects it.
    """
    leak = seam.leaks.find(draft.text) if seam.leaks else None
    kept = _kept_before(draft.text, leak.start) if leak else None
    if leak is None or kept is None:
        return draft
    return draft.then("cut_leak", kept, leak=leak.what, removed=draft.text[len(kept) :])


# ---------------------------------------------------------------------------
# The end
# ---------------------------------------------------------------------------

_PARTIAL_WORD = _lazy(r"(?<=\S)(\s+)[^\W_]+\Z")


def trim_length(seam: Seam, draft: Draft) -> Draft:
    """On a token-limit stop, cut the last word, which may be unfinished (opt-in)."""
    if not seam.options.trim_on_length or seam.finish_reason not in LENGTH_REASONS:
        return draft
    m = _PARTIAL_WORD.search(draft.text)
    if m is None or _no_space_script(draft.text[-1]):
        return draft
    return draft.then("trim_length", draft.text[: m.start()], removed=draft.text[m.start() :])


_NEXT_TURN = _lazy(r"\n\s*(?:User|System|Assistant):")


def strip_transcript(seam: Seam, draft: Draft) -> Draft:
    """A reply written into a transcript: nothing past the next turn (a model that ignored
    the stop sequences goes on to write the user's lines), and a new turn without the
    space after its label (a continued turn keeps its seam for `restore_trailing`)."""
    m = _NEXT_TURN.search(draft.text)
    kept = draft.text if m is None else draft.text[: m.start()]
    kept = kept.rstrip() if seam.prompt else kept.strip()
    if kept == draft.text:
        return draft
    return draft.then("strip_transcript", kept, next_turn=m is not None)


# ---------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------

_APOLOGY = (
    rf"(?:(?:i{_A}m\s+|i\s+am\s+)?sorry|i\s+apologi[sz]e|unfortunately|apologies)"
    r"[,.!]?\s*(?:but\s+)?"
)
_I_CANNOT = (
    rf"i(?:\s+(?:can{_A}?t|cannot|can\s+not|won{_A}t|will\s+not|must\s+decline\s+to"
    rf"|(?:do\s+not|don{_A}t)\s+feel\s+comfortable|am\s+(?:not\s+able\s+to|unable\s+to"
    rf"|not\s+comfortable))|{_A}m\s+(?:not\s+able\s+to|unable\s+to|not\s+comfortable))"
)
# "I can't continue this story": a refusal verb aimed at the task, at the very start.
_REFUSAL_TASK = _lazy(
    rf"\A\s*+(?:{_APOLOGY})?{_I_CANNOT}\s+(?:\w+\s+){{0,2}}?"
    r"(?:help(?:\s+you)?\s+with|assist(?:\s+you)?\s+with|continu\w*|writ\w*|generat\w*"
    r"|creat\w*|produc\w*|complet\w*|engag\w*(?:\s+with)?|provid\w*|fulfil\w*|comply\s+with)"
    r"\b[^.!?\n]{0,80}?\b(?:(?:this|that|the|your|such)\s+(?:\w+\s+)?)?(?:request|story|text"
    r"|content|passage|prompt|scene|continuation|material|task|document|narrative)\b",
    _FLAGS,
)
# "No, I'm sorry, there are no more words.": the model answering the frame, not writing.
_REFUSAL_NO = _lazy(rf"\A\s*+no[,.!]?\s+(?:i{_A}m|i\s+am)\s+sorry\b", _FLAGS)
# Openers an assistant uses to decline; in a story they are usually speech, so these
# count only for chat methods outside dialogue.
_REFUSAL_OPENER = _lazy(
    rf"\A\s*+(?:(?:i{_A}m|i\s+am)\s+sorry,?\s+(?:but|there|that|this|i\b)"
    rf"|i\s+apologi[sz]e,?\s+but|sorry,?\s+but\s+i\b"
    rf"|{_I_CANNOT}\s+(?:help|assist|continue|do\s+that|comply|fulfil)"
    rf"|i\s+won{_A}t\s+be\s+able\s+to|as\s+an\s+ai\b|as\s+a\s+(?:large\s+)?language\s+model)",
    _FLAGS,
)
_AI_META = _lazy(
    r"\bas\s+an\s+ai\s+(?:language\s+model|assistant)\b|\bcontent\s+polic(?:y|ies)\b"
    r"|\b(?:i(?:['’]m|\s+am)|you(?:['’]re|\s+are))\s+an\s+ai\b"
    r"|\busage\s+polic(?:y|ies)\b|\b(?:my|anthropic['’]s|openai['’]s)\s+guidelines\b",
    _FLAGS,
)
_FIRST_SENTENCE = _lazy(r"[^.!?\n]*[.!?]*.?")
_CLOSING_QUOTES = frozenset('"”»」』')


def _spoken(text: str) -> bool:
    """Whether the first sentence of `text` is speech ('…this request, sir."')."""
    m = _FIRST_SENTENCE.match(text.lstrip())
    return m is not None and any(c in _CLOSING_QUOTES for c in m.group(0))


def check_refusal(seam: Seam, draft: Draft) -> Verdict | None:
    text = draft.text
    if (_REFUSAL_TASK.match(text) or _REFUSAL_NO.match(text)) and not (
        seam.dialogue and _spoken(text)
    ):
        return "refusal"
    chat = seam.method in CHAT_METHODS
    if chat and not seam.dialogue and (_REFUSAL_OPENER.match(text) or _AI_META.search(text[:300])):
        return "refusal"
    return None


_ABOUT = (
    r"(?:text|sentence|passage|paragraph|document|excerpt|story|prompt|snippet|poem|input"
    r"|message|request|continuation|phrase|code|function|line|original(?:\s+\w+)?)"
)
_EDIT_VERB = r"(?:refine|rephrase|revise|rewrite|re-write|edit|improve|correct|proofread|polish)"
# An assistant talking about the text or the task instead of continuing it, at the start.
_META_TALK = _lazy(
    r"\A[\s*_#>]*+(?:"
    # "Here's a revised version of the text:", "Here's the equivalent JavaScript:"
    rf"(?:{_HERE}|here\s+are\s+|below\s+are\s+)[^\n]{{0,80}}?\b(?:version|rewrite|revision"
    r"|translation|summary|equivalent|implementation|improvements?|corrections?|edits)\b"
    rf"|(?:{_HERE}|here\s+are\s+)[^\n]{{0,100}}[:：][ \t]*(?:\n|\Z)"
    # "The text you provided…", "This sentence seems to be incomplete."
    rf"|(?:the|this|your|my)\s+{_ABOUT}s?\s+(?:you(?:{_A}ve)?\s+(?:provided|gave|have\s+given"
    r"|shared|wrote|sent|posted)\b|(?:you\s+)?(?:provided|given|above)\b"
    r"|(?:seems|appears)\s+to\s+be\b|can\s+be\s+(?:rephrased|rewritten|improved|revised)\b"
    r"|(?:is|looks|sounds|reads)\s+(?:incomplete|unfinished|cut\s+off|truncated|empty|missing"
    r"|grammatically|already|well[\s-]written|a\s+(?:fragment|request|continuation))\b"
    rf"|(?:does\s+not|doesn{_A}t)\s+(?:contain|have|need|include)\b|(?:contains|lacks|needs)\b)"
    r"|the\s+original\s+(?:text|sentence|passage|document|story|version|phrase)\b"
    r"|the\s+above\s+(?:code|example|text|sentence|passage|snippet|document)\b"
    # "The user wants…"
    rf"|the\s+user(?:{_A}s)?\s+(?:is|has|wants?|asked|asks|provided|requested|wrote|seems|did"
    r"|needs|message|request|input|text)\b"
    r"|in\s+this\s+(?:example|implementation|version|revision|rewrite|snippet|continuation"
    r"|response|answer)\b"
    rf"|(?:i{_A}d|i\s+would|i{_A}ll|i\s+will|let\s+me)\s+(?:like\s+to\s+)?{_EDIT_VERB}\b"
    rf"|(?:i{_A}ll|i\s+will|let\s+me)\s+(?:create|make|write|provide|give\s+you)\s+(?:a|an|the|your)\s+"
    r"(?:new\s+|revised\s+|corrected\s+|better\s+)?(?:document|text|version|sentence|paragraph)\b"
    rf"|(?:i{_A}ve|i\s+have)\s+(?:\w+\s+)?(?:{_EDIT_VERB}|edited|revised|rewritten|corrected"
    r"|improved|refined|rephrased)\b"
    r"|(?:so,?\s+)?to\s+answer\s+your\s+question\b"
    r")",
    _FLAGS,
)
# A chat reply (system, fewshot) is a message: talking about the text or to the user at its
# start is never the document's own voice.
_META_CHAT = _lazy(
    r"\A[\s*_#>]*+(?:"
    rf"(?:{_HERE}|here\s+are\s+|below\s+(?:is|are)\s+)(?:an?\s+|the\s+|some\s+)?(?:list|example"
    r"|summary|breakdown|few|possible|suggested|completed|corrected|revised|rewritten|edited"
    r"|improved|original|new\s+version|short|brief)\b"
    rf"|(?:the|this|your|my)\s+{_ABOUT}s?\b(?!\s+(?:was|had|were|is\s+(?:not\s+)?the))"
    r"|in\s+(?:this|the|your)\s+(?:sentence|text|passage|paragraph|document|story|original)\b"
    rf"|you(?:{_A}ve|\s+have)\s+(?:\w+\s+)?(?:written|completed|crafted|created|filled|provided"
    r"|shared|made|forgotten|given|got)\b|you\s+forgot\b|you(?:['’]re|\s+are)\s+welcome\b"
    r"|you(?:['’]re|\s+are)\s+an?\s+(?:ai|assistant|language\s+model)\b"
    r"|the\s+(?:answer|result|output)\s+(?:is|are|was)\b"
    r"|the\s+following\s+(?:\w+\s+){0,2}?(?:is|are|contains|shows|lists)\b"
    r"|what\s+an?\s+(?:\w+\s+){0,3}?(?:example|task|request|question|start|idea|sentence|poem"
    r"|piece|document|list|text|story|passage)\b"
    r"|[^\n.!?]{0,60}\byou\s+(?:requested|provided|asked\s+for|mentioned|shared|sent\s+me)\b"
    r"|(?:what\s+an?\s+|that['’]s\s+(?:an?\s+)?|this\s+is\s+(?:an?\s+)?)(?:great|fantastic|lovely"
    r"|wonderful|delightful|interesting|beautiful|fascinating|intriguing|excellent|good|nice)\b"
    # Talk to the user: "You can add…", "Can you tell me…", "I'm so sorry for the confusion."
    r"|you\s+(?:can|could|should|may|might)\s+(?:also\s+)?(?:add|create|use|change|edit|try|make"
    r"|insert|replace|remove|modify|adjust|continue|write|choose)\b"
    r"|[^\n.!?]{0,80}\bcan\s+you\s+(?:tell|give|share|provide|clarify|explain|send)\b"
    r"|(?:i['’]m|i\s+am)\s+(?:so\s+|very\s+|really\s+)?sorry\s+(?:for|about)\s+(?:the|any|my)\s+"
    r"(?:confusion|mistake|error|misunderstanding)\b"
    # A line introducing code: "The mean function is defined as a lambda function:" + fence.
    r"|[^\n]{1,160}:[ \t]*\n(?:[ \t]*\n)?[ \t]*```"
    # The assistant speaking of itself: "I'm ready to assist you.", "I'll make sure to…"
    rf"|(?:i{_A}m|i\s+am)\s+(?:ready|glad|happy|pleased|delighted|designed|programmed"
    r"|not\s+sure\s+(?:if|what|how|whether))\b"
    rf"|(?:i{_A}ll|i\s+will)\s+(?:make\s+sure|just|review|provide|help|assist|add)\b"
    r"|please\s+(?:go\s+ahead|provide|share|send|let\s+me\s+know)\b"
    r")",
    _FLAGS,
)
# After some good text, a paragraph that turns to explaining the text ("In this
# implementation…") or the closing fence of a code block the document never opened.
_META_PARAGRAPH = _lazy(
    r"\n[ \t]*\n[ \t]*+[*_#>]*+[ \t]*+(?:in\s+this\s+(?:example|implementation|version|revision|rewrite"
    r"|snippet|code|function|continuation|response|answer|context)\b"
    r"|i\s+could\s+have\s+(?:used|written|made|added|chosen|said)\b"
    r"|i\s+made\s+a\s+(?:small\s+|slight\s+|little\s+)?(?:mistake|error|typo)\s+in\s+the\b"
    r"|the\s+above\s+(?:code|example|text|sentence|passage|snippet|document)\b"
    r"|(?:so,?\s+)?to\s+answer\s+your\s+question\b"
    r"|in\s+(?:this|the)\s+(?:sentence|original\s+text)\b|the\s+original\s+(?:text|sentence"
    r"|passage)\s+(?:is|was|reads)\b"
    r"|(?:this|the)\s+(?:phrase|sentence|passage)\s+can\s+be\s+(?:rephrased|rewritten|translated)\b"
    r"|this\s+(?:code|function|implementation|program|script)\s+(?:defines|calculates|computes"
    r"|takes|returns|uses|will|is|first)\b"
    rf"|(?:i{_A}ve|i\s+have)\s+(?:\w+\s+)?(?:{_EDIT_VERB}|edited|revised|rewritten|corrected"
    r"|improved|refined|rephrased|used|added|made)\b)",
    _FLAGS,
)
_FENCE_LINE = _lazy(r"^[ \t]*```[\w+#.-]*[ \t]*$", re.MULTILINE)


# In a chat reply, a later paragraph about the text: "This phrase can be rephrased as:",
# "I added a continuation to the original document", "The rest of the text, here it is."
_CHAT_META_PARAGRAPH = _lazy(
    r"\n[ \t]*\n[ \t]*+[*_#>]*+[ \t]*+(?:(?:this|the)\s+(?:phrase|sentence|text|document|passage"
    r"|paragraph|original|rest\s+of\s+the\s+text)\s+(?:can|could|should|is|was|contains|has|here)\b"
    r"|this\s+is\s+(?:not\s+)?an?\s+example\s+of\b"
    r"|i\s+(?:added|wrote|made|changed|rewrote|rephrased|corrected|edited|revised)\s+"
    r"(?:a|an|the|this|it|your)\b|(?:you|we)\s+can\s+(?:also\s+)?(?:add|use|change|try|edit)\b)",
    _FLAGS,
)


def cut_meta(seam: Seam, draft: Draft) -> Draft:
    """Cut where good text turns into talk about it: a paragraph explaining the text, or the
    closing fence of a code block the document never opened (the explanation follows it).

    Only when text comes first; talk from the start is for the verdict (`check_meta`).
    """
    text = draft.text
    at = _meta_at(seam, text)
    kept = _kept_before(text, at) if at is not None else None
    if kept is None:
        return draft
    return draft.then("cut_meta", kept, removed=text[len(kept) :])


def _meta_at(seam: Seam, text: str) -> int | None:
    """Where `text` turns to talk about itself (see `cut_meta`), if it does."""
    cuts = []
    if (m := _META_PARAGRAPH.search(text)) is not None:
        cuts.append(m.start())
    if seam.method in CHAT_METHODS and (m := _CHAT_META_PARAGRAPH.search(text)) is not None:
        cuts.append(m.start())
    if "```" not in seam.prompt:
        fences = list(_FENCE_LINE.finditer(text))
        if len(fences) % 2 == 1 and fences[0].group(0).strip() == "```":
            cuts.append(fences[0].start())  # a lone, bare fence closes an imagined block
    return min(cuts, default=None)


# The user's text spoken of ("…hear your work…"), unless the document itself says "your".
_YOUR_TEXT = _lazy(
    r"\byour\s+(?:document|text|story|request|message|writing|draft|work|sentence|passage"
    r"|question)\b",
    _FLAGS,
)
# Editing talk: a chat reply that speaks of "the text" and of editing it, anywhere near its start.
_EDIT_TALK = _lazy(
    r"\b(?:edit(?:ed|s|ing)?|rewritten|rewrote|rephras\w*|revis(?:ed|ion)|typos?|grammar"
    r"|grammatical(?:ly)?|punctuation|proofread\w*)\b",
    _FLAGS,
)
_TEXT_TALK = _lazy(
    r"\b(?:the|this|your|my)\s+(?:text|sentence|passage|paragraph|document|original|wording)\b",
    _FLAGS,
)


# The system and few-shot frames call the text "the document": a chat reply that speaks of
# it ("Can you tell me a little bit about the document?") or of "the above example"
# answers the frame, even after an open quote, unless the document uses those words
# itself. A leak (check_leak): the frame's own word for the text.
_FRAME_TALK = _lazy(
    r"\b(?:the|this|that|your)\s+(?:original\s+)?(document)\b"
    r"|\bthe\s+(above)\s+(?:message|example|text|document|sentence|passage)\b",
    _FLAGS,
)


def _frame_talk(seam: Seam, head: str) -> bool:
    prompt = seam.prompt.lower()
    return any((m.group(1) or m.group(2)).lower() not in prompt for m in _FRAME_TALK.finditer(head))


# Assistant talk anywhere in a reply, outside dialogue: phrases no document continues with.
_ASSISTANT_ANYWHERE = _lazy(
    r"\bsorry\s+for\s+(?:the|any)\s+confusion\b"
    r"|\bhere['’]s\s+the\s+(?:corrected|revised|updated|fixed)\b"
    r"|\bi['’]m\s+ready\s+for\s+the\s+next\s+one\b"
    r"|\bthe\s+(?:text|document|message|passage)\s+you\s+(?:have\s+)?(?:sent|provided|shared|gave)\b"
    r"|\byou\s+can\s+test\s+it\s+yourself\b",
    _FLAGS,
)
# Markup a chat reply invents ("<ref>", "<rem>"): the frames' habit, not the document's.
_INVENTED_TAG = _lazy(r"</?[A-Za-z][\w-]{0,20}>")


def check_meta(seam: Seam, draft: Draft) -> Verdict | None:
    """Talk about the text or to the user ("The sentence you provided…") instead of the text.

    After an open quote or a speaker's label only the unmistakable forms count: "Your
    story had better be good" is a line of dialogue.
    """
    if _META_TALK.match(draft.text):
        return "meta"
    if not seam.dialogue and _ASSISTANT_ANYWHERE.search(draft.text):
        return "meta"
    if seam.method not in CHAT_METHODS:
        return None
    head = draft.text[:400]
    if _EDIT_TALK.search(head) and _TEXT_TALK.search(head):
        return "meta"  # unmistakable even after an open quote
    if _CHAT_META_PARAGRAPH.match("\n\n" + head.lstrip()):
        return "meta"  # what cut_meta cuts after text, with no text before it
    if seam.dialogue:
        return None
    if _META_CHAT.match(draft.text):
        return "meta"
    if _YOUR_TEXT.search(head[:250]) and not re.search(r"\byour\b", seam.prompt, _FLAGS):
        return "meta"
    return None


def check_leak(seam: Seam, draft: Draft) -> Verdict | None:
    if seam.leaks and seam.leaks.find(draft.text):
        return "leak"
    if seam.method in CHAT_METHODS and _frame_talk(seam, draft.text[:400]):
        return "leak"
    if seam.method in CHAT_METHODS and "<" not in seam.prompt and _INVENTED_TAG.search(draft.text):
        return "leak"
    return None


ECHO_WORDS = 5
_SENTENCE_END = _lazy(r"[.!?](?=\s|\Z)|\n")


def first_sentence(text: str) -> str:
    """The reply's first sentence or line (at most 300 characters of it)."""
    text = text.lstrip()[:300]
    m = _SENTENCE_END.search(text)
    return text[: m.end()] if m else text


_LIST_NUMBER = _lazy(r"^[ \t]*(\d{1,3})[.)]", re.MULTILINE)


def _restarts(prompt: str, reply: str) -> bool:
    """Whether a chat reply starts over: its first line opens like a line or sentence of the
    prompt (three words alike), is a whole short line of it ("Dear Mrs. Patel,"), or numbers
    a list from before where the prompt's list stopped ("1." after "3."); or its first
    sentence is only the prompt's words again ("The results were completely unexpec.")."""
    from loom.emulation.leaks import _FILLER, words

    reply = reply.lstrip(" \t\n.,;:!?-–—")
    lines = [" ".join(w for w, _ in words(line)) for line in reply.split("\n")[:3]]
    own_lines = {" ".join(w for w, _ in words(line)) for line in prompt.splitlines()} - {""}
    if sum(line in own_lines for line in lines if line) >= 2:
        return True  # two of its first lines are the prompt's ("Ingredients:", "- 1 kg …")
    first_line = reply.split("\n", 1)[0]
    numbers = [int(n) for n in _LIST_NUMBER.findall(prompt)]
    if numbers and (m := _LIST_NUMBER.match(first_line)) and int(m.group(1)) < numbers[-1]:
        return True
    content = [w for w, _ in words(first_sentence(reply)) if w not in _FILLER]
    if len(content) >= 3 and set(content) <= {w for w, _ in words(prompt)}:
        return True
    head = [w for w, _ in words(first_line)]
    if len(head) < 2:
        return False
    for line in prompt.splitlines():
        whole = [w for w, _ in words(line)]
        if 2 <= len(whole) <= 4 and head[: len(whole)] == whole:
            return True
        for piece in re.split(r"(?<=[.!?])\s+", line):
            start = [w for w, _ in words(piece)][:3]
            if len(start) == 3 and head[:3] == start:
                return True
    return False


def check_echo(seam: Seam, draft: Draft) -> Verdict | None:
    """A first sentence that repeats five words of the prompt in a row: the model is
    re-telling the document, not going on with it. A chat reply that starts over from one
    of the prompt's lines is an echo too."""
    from loom.emulation.leaks import words

    if seam.method in CHAT_METHODS and _restarts(seam.prompt, draft.text):
        return "echo"
    first = [w for w, _ in words(first_sentence(draft.text))]
    if len(first) < ECHO_WORDS:
        return None
    own = [w for w, _ in words(seam.prompt)]
    grams = {tuple(own[i : i + ECHO_WORDS]) for i in range(len(own) - ECHO_WORDS + 1)}
    for i in range(len(first) - ECHO_WORDS + 1):
        if tuple(first[i : i + ECHO_WORDS]) in grams:
            return "echo"
    return None


def check_preamble(seam: Seam, draft: Draft) -> Verdict | None:
    """A reply that is only a preamble, or still speaks as an assistant."""
    if draft.did("strip_preamble") and not draft.text.strip():
        return "preamble"
    if seam.dialogue:
        return None
    if seam.method in CHAT_METHODS:
        return "preamble" if _ASSISTANT_VOICE.match(draft.text) else None
    # Instruct weights on a raw prompt can slip into assistant voice.
    return "preamble" if find_preamble(draft.text, dialogue=False, strong_only=True) else None


def check_overlap(seam: Seam, draft: Draft) -> Verdict | None:
    echoed = sum(len(str(o["removed"])) for o in draft.ops if o["op"] == "drop_overlap")
    if not echoed:
        return None
    rest = len(draft.text.strip())
    return "mostly_overlap" if echoed >= seam.options.mostly_overlap * (echoed + rest) else None


def check_empty(seam: Seam, draft: Draft) -> Verdict | None:
    return "empty" if not draft.text.strip() else None


# Function words: English, and those of the languages a document is most often in besides
# (Spanish, French, German, Italian, Portuguese), to tell a chat model that answered a
# foreign document in English. Words the languages share with English are left out.
_ENGLISH = frozenset(
    ["the", "and", "was", "is", "of", "to", "with", "that", "this", "it", "were", "she",
     "he", "they", "which", "have", "had", "from", "for", "are", "been", "would", "their"]
)  # fmt: skip
_FOREIGN = frozenset(
    ["el", "los", "las", "del", "que", "y", "una", "por", "para", "con", "estaba", "es",
     "les", "des", "et", "est", "une", "dans", "pour", "pas", "sur", "qui", "au", "du",
     "der", "das", "und", "ist", "nicht", "ein", "eine", "zu", "mit", "den", "von", "sich",
     "il", "di", "che", "della", "sono", "nel", "gli", "um", "uma", "não", "com", "ao"]
)  # fmt: skip


def _function_words(text: str) -> tuple[int, int]:
    from loom.emulation.leaks import words

    found = [w for w, _ in words(text)]
    return sum(w in _ENGLISH for w in found), sum(w in _FOREIGN for w in found)


def _mostly_wide_script(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= 8 and sum(_no_space_script(c) for c in letters) >= len(letters) / 2


def check_language(seam: Seam, draft: Draft) -> Verdict | None:
    """A document in another language continued in English: the model answered it."""
    english, foreign = _function_words(seam.prompt[-600:])
    wide = _mostly_wide_script(seam.prompt[-300:])
    if not wide and (foreign < 3 or english * 4 > foreign):
        return None  # an English document (or too little to tell)
    head = " ".join(draft.text.split()[:40])
    out_english, out_foreign = _function_words(head)
    if out_english >= 4 and out_english >= 2 * out_foreign:
        return "language" if not wide or not _mostly_wide_script(head) else None
    return None


# ---------------------------------------------------------------------------
# Profiles and the entry point
# ---------------------------------------------------------------------------

STEPS: Mapping[str, Step] = {
    "strip_preamble": strip_preamble,
    "strip_tags": strip_tags,
    "strip_closing": strip_closing,
    "strip_fences": strip_fences,
    "strip_quotes": strip_quotes,
    "strip_ellipsis": strip_ellipsis,
    "drop_overlap": drop_overlap,
    "drop_rewound": drop_rewound,
    "restore_trailing": restore_trailing,
    "seam_space": seam_space,
    "trim_length": trim_length,
    "strip_transcript": strip_transcript,
    "drop_prefill": drop_prefill,
    "cut_leak": cut_leak,
    "cut_meta": cut_meta,
}
CHECKS: Mapping[str, Check] = {
    "refusal": check_refusal,
    "preamble": check_preamble,
    "meta": check_meta,
    "leak": check_leak,
    "mostly_overlap": check_overlap,
    "echo": check_echo,
    "language": check_language,
    "empty": check_empty,
}


@dataclass(frozen=True)
class Profile:
    steps: tuple[str, ...]
    checks: tuple[str, ...]  # first verdict found wins


# A chat reply is a separate message: unwrap it, then join it to the document.
CHAT_PROFILE = Profile(
    steps=(
        "strip_tags",  # first: a preamble can sit inside the framing's tags
        "strip_preamble",
        "strip_closing",
        "strip_fences",
        "strip_quotes",
        "strip_ellipsis",
        "drop_overlap",
        "drop_rewound",
        "cut_leak",
        "cut_meta",
        "restore_trailing",
        "seam_space",
        "trim_length",
    ),
    checks=("refusal", "preamble", "meta", "leak", "mostly_overlap", "echo", "language", "empty"),
)
# Text produced in place (raw prompt, open assistant turn): the model's own spacing and
# wording are the continuation, so only the seam bookkeeping runs, and the frame is cut
# where it shows through.
IN_PLACE_CHECKS = ("refusal", "preamble", "meta", "leak", "echo", "language", "empty")
IN_PLACE_PROFILE = Profile(
    steps=("drop_rewound", "cut_leak", "cut_meta", "restore_trailing", "trim_length"),
    checks=IN_PLACE_CHECKS,
)
# An open assistant turn: as in place, and the turn itself dropped if the server sent it back.
OPEN_TURN_PROFILE = Profile(
    steps=(
        "drop_prefill",
        "drop_rewound",
        "cut_leak",
        "cut_meta",
        "restore_trailing",
        "trim_length",
    ),
    checks=IN_PLACE_CHECKS,
)
# No emulation: the reply is kept exactly as sent.
OFF_PROFILE = Profile(steps=(), checks=("empty",))
# A reply to a conversation is a turn of its own, joined to nothing, or continues the
# assistant's turn (a seam to keep); a transcript's framing comes off first.
CHAT_REPLY_PROFILE = Profile(steps=("restore_trailing",), checks=("empty",))
TRANSCRIPT_PROFILE = Profile(steps=("strip_transcript", "restore_trailing"), checks=("empty",))

PROFILES: Mapping[str, Profile] = {
    "completion": IN_PLACE_PROFILE,
    "template": OPEN_TURN_PROFILE,
    "prefill": OPEN_TURN_PROFILE,
    "system": CHAT_PROFILE,
    "fewshot": CHAT_PROFILE,
    "off": OFF_PROFILE,
    "chat": CHAT_REPLY_PROFILE,
    "transcript": TRANSCRIPT_PROFILE,
}


def run_steps(seam: Seam, draft: Draft, steps: Sequence[str]) -> Draft:
    for name in steps:
        draft = STEPS[name](seam, draft)
    return draft


def judge(seam: Seam, draft: Draft, checks: Sequence[str]) -> Verdict:
    for name in checks:
        verdict = CHECKS[name](seam, draft)
        if verdict is not None:
            return verdict
    return "ok"


def clean(
    prompt: str | Context,
    raw: str,
    method: str,
    finish_reason: str | None = None,
    options: CleanOptions | None = None,
    *,
    prepared: Prepared | None = None,
    frame: Sequence[str] = (),
) -> Cleaned:
    """Turn a model's reply into text to append after `prompt`, with a verdict.

    `prompt` is the document text up to the seam exactly as the user has it (or the
    `Context` it came from: a reply to a conversation is a turn, joined to nothing);
    `prepared` is what `prepare_prompt` made of it for the request (recomputed
    without rewinding when omitted); `frame` is what was sent besides the document
    (`Framing.frame`), whose words in the reply are a leak.
    """
    if method not in PROFILES:
        raise ValueError(f"unknown emulation method {method!r}")
    if isinstance(prompt, Context):
        prompt = prompt.seam_text
    options = options or CleanOptions()
    prepared = prepared or prepare_prompt(prompt)
    if prepared.original != prompt:
        raise ValueError("prepared prompt does not belong to this prompt")
    profile = PROFILES[method]
    steps = profile.steps if options.steps is None else options.steps
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown cleanup steps: {', '.join(unknown)}")
    leaks = Leaks(frame, prompt) if not isinstance(prompt, Context) else None
    seam = Seam(prompt, prepared, method, finish_reason, options, in_dialogue(prompt), leaks)
    draft = run_steps(seam, Draft(raw), steps)
    return Cleaned(draft.text, raw, draft.ops, judge(seam, draft, profile.checks), method)
