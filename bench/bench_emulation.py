"""Base-model emulation on a real local instruct model: each method, before and after cleanup.

The same varied prompts go through every emulation method loom can run on the bundled
SmolLM2-135M-Instruct (`smollm2`, one llama.cpp instance for all methods), K seeded
samples each. Every output is measured twice, RAW (the model's text appended to the
prompt as is) and CLEANED (after `loom.emulation.cleanup.clean`, exactly as
`loom.generation.cleaning.clean_outcome` calls it), by detectors written here, independent of cleanup:

    voice   a preamble or assistant voice ("Sure! Here's…", "The sentence seems to be…",
            a markdown fence and an explanation after finished code)
    echo    starts by repeating the prompt's end (>= 3 words or >= 12 chars)
    rpt     repeats the prompt otherwise (restarts one of its lines or sentences, repeats
            its last 5 words with one changed, or any 5 consecutive words of it)
    seam    a broken join: missing space, doubled space, space before punctuation,
            space after an opening quote, a split or re-spelled word after a mid-word prompt
    refus   a refusal
    empty   no letter or digit at all
    leak    the framing shows through (<document> tags, few-shot examples, chat tokens)
    lang    a prompt not in English answered in English
    clean   none of the above (CLEANED rows: and the cleanup verdict accepted it)
    rej     the cleanup verdict rejected the output (cleanup's own code, not a detector)
    kept!   accepted by the verdict although a detector fires (what reaches the document)
    lost!   rejected by the verdict although no detector fires (a false alarm, or a miss here)

    python bench/bench_emulation.py [--prompts N] [--samples K] [--max-tokens T] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loom.config import ModelConfig, get_model
from loom.emulation.capabilities import ModelCaps, load_table
from loom.emulation.cleanup import clean
from loom.emulation.framing import (
    FRAMING_VERSION,
    FRAMINGS,
    METHODS,
    build_request,
    choose_method,
    why_not,
)
from loom.generation.backends import make_backend, table_provider
from loom.generation.backends.base import Backend
from loom.generation.context import Context
from loom.generation.engine import Branch, Outcome, run_branches
from loom.generation.plan import user_capabilities_file

METHOD_ORDER = ("completion", "template", "prefill", "system", "fewshot")
TEMPERATURE = 0.8
SEED = 1234


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
# Detectors (independent of cleanup: none of cleanup's code or patterns is used; the
# echo thresholds, 3 words or 12 chars, are the same numbers as CleanOptions' defaults).
# Only the `rej` column is cleanup's own code: `Cleaned.verdict` from `clean()`.
# ---------------------------------------------------------------------------

FLAGS = ("voice", "echo", "rpt", "seam", "refus", "empty", "leak", "lang")
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
    r"|\b(?:rewritten|revised|edited|corrected)\s+(?:version|text|sentence)\b"
    r"|\byour\s+(?:document|story|text|writing|request|original)\b|\b(?:assist|help)\s+you\s+with\b"
    r"|\b(?:to\s+)?answer\s+your\s+question\b|\bin\s+this\s+(?:version|revision|rewrite)\b"
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
    r"\b(?:i'?m|i\s+am)\s+sorry\b[^.!?\n]{0,40}\b(?:but|can'?t|cannot|unable)\b"
    r"|\bi\s+apologi[sz]e\b"
    r"|\bi\s*(?:can'?t|cannot|can\s+not|won'?t|will\s+not|am\s+unable\s+to|'m\s+unable\s+to"
    r"|am\s+not\s+able\s+to|'m\s+not\s+able\s+to)\s+(?:help|assist|continue|write|fulfil"
    r"|comply|provide|create|generate|complete|do\s+that|engage)"
    r"|\bas\s+an\s+ai\b|\blanguage\s+model\b|\b(?:content|usage)\s+polic(?:y|ies)\b"
    r"|\bagainst\s+my\s+(?:guidelines|programming)\b",
    re.IGNORECASE,
)

# The framing's own words: tags, the terminal frame, chat-template tokens, and any six
# consecutive words of a few-shot example or of the system prompt.
_LEAK = re.compile(
    r"</?(?:document|continuation|cmd)>|\bexample\s+\d\s*:|untitled\.txt|continuation\s+engine"
    r"|<\|im_(?:start|end)\|>|\A\s*(?:assistant|user|system)\s*\n",
    re.IGNORECASE,
)


def _framing_grams() -> set[tuple[str, ...]]:
    text = FRAMINGS[FRAMING_VERSION]
    sources = [text.system, text.terminal_system, *(d + c for d, c in text.examples)]
    grams: set[tuple[str, ...]] = set()
    for source in sources:
        w = _words(source)
        grams.update(tuple(w[i : i + 6]) for i in range(len(w) - 5))
    return grams


_FRAMING_GRAMS = _framing_grams()


def leak(prompt: str, output: str) -> bool:
    if _LEAK.search(output):
        return True
    own = _words(prompt)
    own_grams = {tuple(own[i : i + 6]) for i in range(len(own) - 5)}
    w = _words(output)
    return any(
        (g := tuple(w[i : i + 6])) in _FRAMING_GRAMS and g not in own_grams
        for i in range(len(w) - 5)
    )


def detect(prompt: Prompt, output: str) -> dict[str, str]:
    """Every detector that fires on `output` appended to `prompt`, with a short reason."""
    if not any(c.isalnum() for c in output):
        return {"empty": "no letter or digit"}
    found: dict[str, str] = {}
    if voice(prompt.text, output):
        found["voice"] = "assistant voice"
    tail = echoed(prompt.text, output)
    if tail:
        found["echo"] = repr(tail)
    else:
        again = repeats(prompt.text, output)
        if again:
            found["rpt"] = again
    why = seam(prompt, output)
    if why:
        found["seam"] = why
    if _REFUSAL.search(output[:300]):
        found["refus"] = "refusal"
    if leak(prompt.text, output):
        found["leak"] = "framing leak"
    if wrong_language(prompt, output):
        found["lang"] = "answered in English"
    return found


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


@dataclass
class Sample:
    method: str
    prompt: Prompt
    index: int
    raw: str
    cleaned: str
    verdict: str
    ops: list[str]
    finish: str | None
    error: str | None
    tokens: int
    raw_flags: dict[str, str] = field(default_factory=dict)
    clean_flags: dict[str, str] = field(default_factory=dict)

    @property
    def rejected(self) -> bool:
        return self.verdict != "ok"


def _branches(
    model: ModelConfig,
    entry: ModelCaps,
    method: str,
    prompt: Prompt,
    samples: int,
    max_tokens: int,
) -> list[Branch]:
    out = []
    params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": TEMPERATURE, "seed": SEED}
    for i in range(samples):
        # Identical requests (one prompt's K samples) share one llama.cpp call with n=K.
        branch = Branch(model=model, params=dict(params), provenance={"sample": i}, max_n=samples)
        # The framing generation makes (without a seed phrase: sampling varies here).
        branch.request, branch.framing = build_request(
            method, prompt.text, model.model, 1, branch.params, caps=entry
        )
        branch.context = Context.of_text(prompt.text)
        out.append(branch)
    return out


def _sample(method: str, prompt: Prompt, index: int, o: Outcome) -> Sample:
    raw = o.text
    framing = o.branch.framing
    assert framing is not None  # every branch here was framed
    # The call generation's clean_outcome makes.
    c = clean(prompt.text, raw, method, o.finish_reason, prepared=framing.prepared)
    s = Sample(
        method=method,
        prompt=prompt,
        index=index,
        raw=raw,
        cleaned=c.text,
        verdict=c.verdict,
        ops=[str(op["op"]) for op in c.ops],
        finish=o.finish_reason,
        error=o.error,
        tokens=int((o.usage or {}).get("completion_tokens", 0)),
    )
    s.raw_flags = detect(prompt, raw)
    s.clean_flags = detect(prompt, c.text)
    return s


async def run_method(
    backend: Backend,
    model: ModelConfig,
    entry: ModelCaps,
    method: str,
    prompts: Sequence[Prompt],
    samples: int,
    max_tokens: int,
    concurrency: int,
) -> list[Sample]:
    branches: list[Branch] = []
    owners: list[tuple[Prompt, int]] = []
    for prompt in prompts:
        for i, b in enumerate(_branches(model, entry, method, prompt, samples, max_tokens)):
            branches.append(b)
            owners.append((prompt, i))
    outcomes = await run_branches(branches, {model.name: backend}, concurrency=concurrency)
    return [_sample(method, p, i, o) for (p, i), o in zip(owners, outcomes, strict=True)]


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------


def _pct(k: int, n: int) -> str:
    return f"{100 * k / n:4.0f}%" if n else "   -"


def table(results: dict[str, list[Sample]]) -> str:
    cols = [*FLAGS, "clean", "rej", "kept!", "lost!"]
    head = f"{'method':<11}{'stage':<8}{'n':>4} " + "".join(f"{c:>6}" for c in cols)
    lines = [head, "-" * len(head)]
    for method, samples in results.items():
        n = len(samples)
        for stage in ("raw", "cleaned"):
            cells: list[str] = []
            for flag in FLAGS:
                hits = sum(
                    flag in (s.raw_flags if stage == "raw" else s.clean_flags) for s in samples
                )
                cells.append(_pct(hits, n))
            if stage == "raw":
                clean_n = sum(not s.raw_flags for s in samples)
                cells += [_pct(clean_n, n), "     -", "     -", "     -"]
            else:
                clean_n = sum(not s.clean_flags and not s.rejected for s in samples)
                rej = sum(s.rejected for s in samples)
                kept_bad = sum(bool(s.clean_flags) and not s.rejected for s in samples)
                lost_good = sum(not s.clean_flags and s.rejected for s in samples)
                cells += [_pct(clean_n, n), _pct(rej, n), _pct(kept_bad, n), _pct(lost_good, n)]
            name = method if stage == "raw" else ""
            lines.append(f"{name:<11}{stage:<8}{n:>4} " + "".join(f"{c:>6}" for c in cells))
    return "\n".join(lines)


def breakdowns(results: dict[str, list[Sample]]) -> str:
    lines = []
    for method, samples in results.items():
        verdicts = Counter(s.verdict for s in samples)
        ops = Counter(op for s in samples for op in set(s.ops))
        seams = Counter(s.clean_flags["seam"] for s in samples if "seam" in s.clean_flags)
        lines.append(
            f"{method:<11}verdicts: {dict(verdicts.most_common())}\n"
            f"{'':<11}cleanup ops (outputs touched): {dict(ops.most_common()) or '{}'}\n"
            f"{'':<11}seam breaks after cleanup: {dict(seams.most_common()) or '{}'}"
        )
    return "\n".join(lines)


def per_prompt(results: dict[str, list[Sample]], prompts: Sequence[Prompt]) -> str:
    """Share of clean, accepted outputs per prompt and method: where each method fails."""
    methods = list(results)
    head = f"{'prompt':<16}" + "".join(f"{m:>12}" for m in methods)
    lines = [head, "-" * len(head)]
    for prompt in prompts:
        cells = []
        for m in methods:
            mine = [s for s in results[m] if s.prompt.name == prompt.name]
            good = sum(not s.clean_flags and not s.rejected for s in mine)
            cells.append(f"{good:>6}/{len(mine):<5}")
        lines.append(f"{prompt.name:<16}" + "".join(f"{c:>12}" for c in cells))
    return "\n".join(lines)


def _short(text: str, limit: int = 110) -> str:
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 1] + "…"


def examples(results: dict[str, list[Sample]], per_method: int) -> str:
    """A few outputs per method that still fail after cleanup, one per kind of failure."""
    lines: list[str] = []
    for method, samples in results.items():
        shown: set[int] = set()
        for flag in (*FLAGS, "lost!"):
            if len(shown) >= per_method:
                break
            for k, s in enumerate(samples):
                lost = s.rejected and not s.clean_flags
                hit = lost if flag == "lost!" else flag in s.clean_flags
                if hit and k not in shown:
                    shown.add(k)
                    why = "; ".join(f"{f}: {v}" for f, v in s.clean_flags.items()) or "no flag"
                    lines.append(
                        f"[{method}] {s.prompt.name} #{s.index} verdict={s.verdict} ({why})\n"
                        f"    raw:     {_short(s.raw)}\n    cleaned: {_short(s.cleaned)}"
                    )
                    break
    return "\n".join(lines)


def dump(path: Path, results: dict[str, list[Sample]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for samples in results.values():
            for s in samples:
                row = {
                    "method": s.method,
                    "prompt": s.prompt.name,
                    "sample": s.index,
                    "raw": s.raw,
                    "cleaned": s.cleaned,
                    "verdict": s.verdict,
                    "ops": s.ops,
                    "finish": s.finish,
                    "error": s.error,
                    "raw_flags": s.raw_flags,
                    "clean_flags": s.clean_flags,
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> None:
    started = time.monotonic()
    base = get_model(args.model)
    # One backend for every method. More llama.cpp slots than samples lets two prompts
    # decode in one batch, which is ~30% more tokens/s on one thread than one at a time.
    model = dataclasses.replace(
        base,
        options={
            **base.options,
            "threads": args.threads,
            "n_parallel": max(args.samples * args.parallel, 1),
            "ctx_per_seq": 1024,
        },
    )
    backend = make_backend(model)
    prompts = PROMPTS[: args.prompts]
    results: dict[str, list[Sample]] = {}
    timings: dict[str, float] = {}
    try:
        # Load the model (and warm it up) with a one-token request, timed on its own.
        t = time.monotonic()
        warm = Branch(model=model, params={"max_tokens": 1})
        warm.request, warm.framing = build_request("completion", "Hello", model.model, 1)
        await run_branches([warm], {model.name: backend})
        load = time.monotonic() - t
        # What generation uses for this model: the capability table with the user's overrides.
        entry = load_table(user_capabilities_file()).lookup(table_provider(model), model.model)
        chain = choose_method(backend.capabilities, model.kind, entry)
        methods = [m for m in args.methods if m in METHODS]
        for method in methods:
            problem = why_not(method, backend.capabilities, entry)
            if problem:
                print(f"skipping {method}: {problem}")
                continue
            t = time.monotonic()
            results[method] = await run_method(
                backend, model, entry, method, prompts, args.samples, args.max_tokens, args.parallel
            )
            timings[method] = time.monotonic() - t
            failed = [s for s in results[method] if s.error]
            if failed:
                print(f"{method}: {len(failed)} request error(s), e.g. {failed[0].error}")
    finally:
        with contextlib.suppress(Exception):
            await backend.aclose()

    total = time.monotonic() - started
    tokens = sum(s.tokens for samples in results.values() for s in samples)
    gen = sum(timings.values())
    print(
        f"\n## Base-model emulation on {model.name} ({model.model}): {len(prompts)} prompts x "
        f"{args.samples} samples per method, max_tokens={args.max_tokens}, "
        f"temperature={TEMPERATURE}, seed={SEED}, threads={args.threads}\n"
    )
    print(f"loom's automatic method chain for this model: {' -> '.join(chain)}\n")
    print(table(results))
    print(
        "\nvoice=preamble/assistant voice, echo=starts with the prompt's end (>=3 words or "
        ">=12 chars), rpt=repeats the prompt otherwise,\nseam=broken join, refus=refusal, "
        "empty=no letter or digit, leak=framing shows through, lang=answered in English;\n"
        "clean=none of these (cleaned: and accepted by the verdict); rej=cleanup verdict "
        "rejected;\nkept!=accepted but flagged; lost!=rejected but no flag."
    )
    print("\n## Clean and accepted outputs per prompt\n")
    print(per_prompt(results, prompts))
    print("\n## Cleanup verdicts and operations\n")
    print(breakdowns(results))
    if args.examples:
        print("\n## Failures left after cleanup (examples)\n")
        print(examples(results, args.examples))
    if args.dump:
        dump(Path(args.dump), results)
        print(f"\nall outputs written to {args.dump}")
    print(
        f"\ntotal {total:.1f} s: model load {load:.1f} s, generation {gen:.1f} s "
        f"({', '.join(f'{m} {t:.1f}' for m, t in timings.items())}), "
        f"{tokens} tokens = {tokens / gen if gen else 0:.0f} tok/s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="use the first N prompts")
    ap.add_argument("--samples", type=int, default=5, help="seeded samples per prompt and method")
    ap.add_argument("--max-tokens", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--parallel", type=int, default=2, help="requests decoded together")
    ap.add_argument("--model", default="smollm2", help="a configured chat model (default smollm2)")
    ap.add_argument("--methods", nargs="+", default=list(METHOD_ORDER), choices=METHOD_ORDER)
    ap.add_argument("--examples", type=int, default=3, help="failure examples per method")
    ap.add_argument("--dump", metavar="JSONL", help="write every output here")
    args = ap.parse_args()
    if args.samples < 1 or args.prompts < 1 or args.max_tokens < 1:
        ap.error("--prompts, --samples and --max-tokens must be at least 1")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
