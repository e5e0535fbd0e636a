"""Strict readers for untrusted input: typed field access, JSON from foreign bytes, timestamps, tags."""

from __future__ import annotations

import math
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from loom.errors import DocumentError

APPLE_EPOCH = datetime(2001, 1, 1, tzinfo=UTC)
UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Numbers above this are milliseconds, not seconds (1e11 s is the year 5138).
_MS_THRESHOLD = 1e11
_WHITESPACE = re.compile(r"\s+")
_SURROGATE = re.compile("[\ud800-\udfff]")


def describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class Reader:
    """Typed access to a foreign file's values: wrong types become one clear DocumentError."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt

    def fail(self, message: str) -> DocumentError:
        return DocumentError(f"{self.fmt}: {message}")

    def obj(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"{where} is {describe(value)}, not an object")
        return value

    def arr(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(f"{where} is {describe(value)}, not a list")
        return value

    def text(self, rec: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
        value = rec.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.fail(f'{where} has a "{key}" that is {describe(value)}, not text')
        return value

    def opt_text(self, rec: Mapping[str, Any], key: str, where: str) -> str | None:
        value = rec.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(f'{where} has a "{key}" that is {describe(value)}, not text')
        return value

    def ident(self, value: Any, where: str) -> str:
        """An id: text, or a whole number (some tools write numeric ids)."""
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise self.fail(f"{where} is {describe(value)}, not an id")

    def opt_ident(self, rec: Mapping[str, Any], key: str, where: str) -> str | None:
        value = rec.get(key)
        if value is None or value == "":
            return None
        return self.ident(value, f'the "{key}" of {where}')

    def idents(self, rec: Mapping[str, Any], key: str, where: str) -> list[str]:
        value = rec.get(key)
        if value is None:
            return []
        items = self.arr(value, f'the "{key}" of {where}')
        return [self.ident(v, f'an entry of the "{key}" of {where}') for v in items]

    def flag(self, rec: Mapping[str, Any], key: str, where: str, default: bool = False) -> bool:
        value = rec.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float) and value in (0, 1):
            return bool(value)
        raise self.fail(f'{where} has a "{key}" that is {describe(value)}, not true/false')

    def number(self, rec: Mapping[str, Any], key: str, where: str) -> float | None:
        value = rec.get(key)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.fail(f'{where} has a "{key}" that is {describe(value)}, not a number')
        return float(value)


def rest(rec: Mapping[str, Any], known: Iterable[str]) -> dict[str, Any]:
    """The fields of `rec` an importer did not map (kept in meta.import.fields).

    Secret-looking keys are dropped later, for the whole forest at once
    (`ImportedForest.drop_secrets`), so values an importer copies by hand are covered too.
    """
    skip = set(known)
    return {k: v for k, v in rec.items() if k not in skip}


def clean_tag(name: str) -> str:
    """Loom tags are single words: runs of whitespace become '-'."""
    return _WHITESPACE.sub("-", name.strip())


def tags_from(raw: Iterable[str]) -> tuple[list[str], bool]:
    """Loom tags from source tag names; the flag says whether any name had to change."""
    out: list[str] = []
    changed = False
    for name in raw:
        tag = clean_tag(name)
        changed |= tag != name
        if tag and tag not in out:
            out.append(tag)
    return out, changed


def loads(raw: bytes, name: str, *, keep_surrogates: bool = False) -> Any:
    """Parse JSON, with one-line errors. Handles nesting deeper than orjson allows.

    Text with unpaired UTF-16 surrogates (JavaScript tools can write them) is parsed
    by the standard library; unless `keep_surrogates`, they become U+FFFD.
    """
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        raise DocumentError(f"{name}: the file is empty")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if "depth limit" in reason or "recursion" in reason or "surrogate" in reason:
            data = _std_loads(raw, name)
            return data if keep_surrogates else scrub_surrogates(data)
        pos = getattr(exc, "pos", None)
        where = f" at byte {pos}" if pos is not None else ""
        truncated = pos is not None and pos >= len(raw.rstrip()) - 1
        hint = " (the file looks truncated)" if truncated else ""
        raise DocumentError(f"{name}: not valid JSON{where}{hint}: {exc.msg}") from None


def _std_loads(raw: bytes, name: str) -> Any:
    """The standard library's parser (lenient about surrogates), on a thread with a deep stack.

    Its C scanner recurses once per nesting level; a big stack and a raised limit
    let files nested thousands of levels deep parse.
    """
    import json

    result: list[Any] = []
    error: list[BaseException] = []

    def work() -> None:
        try:
            result.append(json.loads(raw.decode("utf-8")))
        except BaseException as exc:  # re-raised on the calling thread
            error.append(exc)

    old_limit = sys.getrecursionlimit()
    old_stack = threading.stack_size()
    try:
        threading.stack_size(512 * 1024 * 1024)
        sys.setrecursionlimit(max(old_limit, 400_000))
        worker = threading.Thread(target=work, name="loom-json")
        worker.start()
        worker.join()
    finally:
        threading.stack_size(old_stack)
        sys.setrecursionlimit(old_limit)
    if not error:
        return result[0]
    exc = error[0]
    if isinstance(exc, RecursionError):
        raise DocumentError(f"{name}: nested too deeply to read") from None
    if isinstance(exc, UnicodeDecodeError):
        raise DocumentError(f"{name}: not UTF-8 text (bad byte at {exc.start})") from None
    if isinstance(exc, json.JSONDecodeError):
        raise DocumentError(f"{name}: not valid JSON at byte {exc.pos}: {exc.msg}") from None
    raise exc


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def has_surrogate_escapes(raw: bytes) -> bool:
    """Whether JSON bytes contain \\uD800-\\uDFFF escapes (paired or not)."""
    return _SURROGATE_ESCAPE.search(raw) is not None


def fix_text(text: str) -> str:
    """Join surrogate pairs and replace unpaired surrogates with U+FFFD."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def scrub_surrogates(data: Any) -> Any:
    """`fix_text` on every string inside parsed JSON (iteratively)."""
    if isinstance(data, str):
        return fix_text(data)
    stack = [data]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            for key in list(current):
                value = current[key]
                fixed_key = fix_text(key) if isinstance(key, str) else key
                if isinstance(value, str):
                    value = fix_text(value)
                elif isinstance(value, dict | list):
                    stack.append(value)
                if fixed_key != key:
                    del current[key]
                current[fixed_key] = value
        elif isinstance(current, list):
            for i, value in enumerate(current):
                if isinstance(value, str):
                    current[i] = fix_text(value)
                elif isinstance(value, dict | list):
                    stack.append(value)
    return data


def iso(dt: datetime) -> str:
    """Loom's timestamp form: ISO 8601 UTC with milliseconds and a Z."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def to_iso(value: Any, *, epoch: str = "unix") -> str | None:
    """A source timestamp as loom's ISO form, or None if it cannot be read.

    Numbers count seconds (milliseconds when large) since `epoch` ("unix", or
    "apple": 2001-01-01, as OpenLoom writes). Text may be ISO 8601, pyloom's
    "2021-09-16-21.55.18", or a number. Times without a zone are taken as UTC.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return to_iso(float(text), epoch=epoch)
        except ValueError:
            pass
        for parse in (_parse_iso, _parse_pyloom):
            dt = parse(text)
            if dt is not None:
                return iso(dt)
        return None
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds):
            return None
        if epoch == "unix" and abs(seconds) > _MS_THRESHOLD:
            seconds /= 1000.0
        base = APPLE_EPOCH if epoch == "apple" else UNIX_EPOCH
        try:
            return iso(base + timedelta(seconds=seconds))
        except (OverflowError, ValueError):
            return None
    return None


def _parse_iso(text: str) -> datetime | None:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _parse_pyloom(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%d-%H.%M.%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_iso(value: Any) -> datetime | None:
    """A loom ISO timestamp back as a datetime (None if absent or unreadable)."""
    if not isinstance(value, str):
        return None
    return _parse_iso(value)


def epoch_seconds(value: Any, *, epoch: str = "unix") -> float | None:
    dt = parse_iso(value)
    if dt is None:
        return None
    base = APPLE_EPOCH if epoch == "apple" else UNIX_EPOCH
    return (dt - base).total_seconds()
