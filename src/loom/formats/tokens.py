"""Token probabilities from other tools, in the shape of `meta.logprobs`."""

from __future__ import annotations

import math
import re
from typing import Any

_BYTE_TOKEN = "bytes:"
_BYTE_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def _token_bytes(token: str) -> bytes:
    """OpenAI's "bytes: \\xe2\\x80" token: literal characters and \\xHH escapes, as bytes."""
    out = bytearray()
    body = token[len(_BYTE_TOKEN) :]
    i = 0
    while i < len(body):
        match = _BYTE_ESCAPE.match(body, i)
        if match:
            out.append(int(match.group(1), 16))
            i = match.end()
        else:
            out.extend(body[i].encode("utf-8", "surrogatepass"))
            i += 1
    return bytes(out)


def logprobs_record(
    tokens: list[str],
    lps: list[float],
    top: list[list[tuple[str, float]]] | None,
    *,
    source: str = "unknown",
) -> dict[str, Any]:
    """Loom's compact `meta.logprobs` shape (see docs/schema.md). `source` uses the
    engine's words: "post-sampling" for the OpenAI API, "unknown" when not known.

    Runs of byte tokens (a character split across tokens, "bytes:\\xe2\\x80") are joined
    into the character they spell, with the summed logprob, so offsets match the text.
    """
    texts: list[str] = []
    values: list[float] = []
    alts: list[list[tuple[str, float]]] = []
    pending = b""
    pending_lp = 0.0
    for i, token in enumerate(tokens):
        if token.startswith(_BYTE_TOKEN):
            pending += _token_bytes(token)
            pending_lp += lps[i]
            try:
                decoded = pending.decode("utf-8")
            except UnicodeDecodeError:
                continue
            texts.append(decoded)
            values.append(pending_lp)
            alts.append([])
            pending, pending_lp = b"", 0.0
            continue
        if pending:
            texts.append(pending.decode("utf-8", "replace"))
            values.append(pending_lp)
            alts.append([])
            pending, pending_lp = b"", 0.0
        texts.append(token)
        values.append(lps[i])
        alts.append(top[i] if top is not None and i < len(top) else [])
    if pending:
        texts.append(pending.decode("utf-8", "replace"))
        values.append(pending_lp)
        alts.append([])
    out: dict[str, Any] = {"source": source, "tokens": texts, "lp": values}
    if any(alts):
        out["top"] = [[[t, lp] for t, lp in entry] for entry in alts]
    return out


def fit(text: str, logprobs: dict[str, Any]) -> dict[str, Any] | None:
    """The record if its tokens spell the start of `text` (so every offset is right), else None.

    Tokens past the end of a fully covered text (sampled after a stop sequence the
    tool cut off) are dropped.
    """
    tokens = logprobs.get("tokens")
    if not isinstance(tokens, list) or not tokens:
        return None
    offset = 0
    count = 0
    for token in tokens:
        if not isinstance(token, str) or not text.startswith(token, offset):
            break
        offset += len(token)
        count += 1
    if count == len(tokens):
        return logprobs
    if offset != len(text) or count == 0:
        return None
    return {k: (v[:count] if isinstance(v, list) else v) for k, v in logprobs.items()}


def aligned_prefix(text: str, logprobs: dict[str, Any]) -> dict[str, Any] | None:
    """The record cut to its leading tokens that spell the start of `text` (None if none do).

    What a node keeps of a generation its text has drifted from: the probabilities of
    the part still as generated. Stops at an empty token, so a node never gets more
    tokens than its text has characters, however many the record holds.
    """
    tokens = logprobs.get("tokens")
    if not isinstance(tokens, list):
        return None
    offset = count = 0
    for token in tokens:
        if not isinstance(token, str) or not token or not text.startswith(token, offset):
            break
        offset += len(token)
        count += 1
    if count == 0:
        return None
    if count == len(tokens):
        return logprobs
    return {k: (v[:count] if isinstance(v, list) else v) for k, v in logprobs.items()}


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def logprobs_from_openai(raw: Any, *, source: str = "unknown") -> dict[str, Any] | None:
    """OpenAI completion logprobs ({tokens, token_logprobs, top_logprobs}) in loom's shape.

    Chat-style `{"content": [{token, logprob, top_logprobs: [{token, logprob}]}]}` and a
    bare list of such entries are read too. Returns None if the value is not one of these.
    """
    if isinstance(raw, dict) and isinstance(raw.get("content"), list):
        raw = raw["content"]
    if isinstance(raw, list):
        tokens: list[str] = []
        lps: list[float] = []
        top: list[list[tuple[str, float]]] = []
        for entry in raw:
            if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
                return None
            lp = _finite(entry.get("logprob"))
            if lp is None:
                return None
            tokens.append(entry["token"])
            lps.append(lp)
            alts: list[tuple[str, float]] = []
            for alt in entry.get("top_logprobs") or ():
                if (
                    isinstance(alt, dict)
                    and isinstance(alt.get("token"), str)
                    and _finite(alt.get("logprob")) is not None
                ):
                    alts.append((alt["token"], float(alt["logprob"])))
            top.append(alts)
        return logprobs_record(tokens, lps, top, source=source) if tokens else None
    if not isinstance(raw, dict):
        return None
    toks = raw.get("tokens")
    values = raw.get("token_logprobs")
    if (
        not isinstance(toks, list)
        or not isinstance(values, list)
        or len(toks) != len(values)
        or not toks
    ):
        return None
    if not all(isinstance(t, str) for t in toks):
        return None
    lps_out: list[float] = []
    for value in values:
        # The first token of an echoed prompt has no logprob; such records are not ours to align.
        number = _finite(value)
        if number is None:
            return None
        lps_out.append(number)
    tops_raw = raw.get("top_logprobs")
    tops: list[list[tuple[str, float]]] | None = None
    if isinstance(tops_raw, list) and len(tops_raw) == len(toks):
        tops = [alternatives(entry) for entry in tops_raw]
    return logprobs_record(list(toks), lps_out, tops, source=source)


def alternatives(entry: Any) -> list[tuple[str, float]]:
    """{"tok": logprob, …} as (token, logprob) pairs, most likely first."""
    if not isinstance(entry, dict):
        return []
    pairs = [(str(k), float(v)) for k, v in entry.items() if _finite(v) is not None]
    pairs.sort(key=lambda kv: kv[1], reverse=True)
    return pairs


def prompt_fingerprint(prompt: str) -> dict[str, Any]:
    """How meta.gen records a prompt without storing it (the engine's own digest)."""
    from loom.generation.context import prompt_digest  # a light module: no backend loads

    return {"prompt": prompt_digest(prompt)}
