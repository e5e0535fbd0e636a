"""JSON in and out, choosing the decoder by size.

orjson decodes and encodes large documents several times faster, but importing it
costs ~15 ms (it pulls in dataclasses and inspect): more than decoding a small
document with the standard library takes. Navigation on small documents therefore
never imports it; saves and large documents always use it.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

LARGE = 1 << 20  # bytes: from here on orjson's speed outweighs its import
LINE_PER_NODE_LIMIT = 5000
# The standard library accepts lone surrogates written as escapes ("\ud800"), which
# cannot be saved again; orjson refuses them, so such files go to orjson to decide.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class DecodeError(ValueError):
    """Not JSON: `pos` is the byte/char offset where decoding failed, `msg` why."""

    def __init__(self, msg: str, pos: int | None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.pos = pos


def loads(raw: bytes) -> Any:
    try:
        if len(raw) >= LARGE or _SURROGATE_ESCAPE.search(raw):
            import orjson

            return orjson.loads(raw)
        return json.loads(raw)
    except json.JSONDecodeError as exc:  # orjson's error is a subclass of this one
        return _raise(exc.msg, exc.pos)
    except UnicodeDecodeError as exc:
        return _raise(f"not UTF-8 text ({exc.reason})", exc.start)
    except RecursionError:
        return _raise("nested too deeply", None)


def _raise(msg: str, pos: int | None) -> Any:
    raise DecodeError(msg, pos)


def dump_document(data: Any) -> bytes:
    """A document file's bytes: one top-level field per line and one node per line.

    Compact (indenting put every logprob on a line of its own: ~4x the size) while a
    change to one node is still a one-line diff. Past LINE_PER_NODE_LIMIT nodes the
    per-line loop costs more than it gives, and the file is written in one piece.
    """
    import orjson

    nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(data, dict) or (isinstance(nodes, dict) and len(nodes) > LINE_PER_NODE_LIMIT):
        return orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE)
    lines = [b"{"]
    keys = list(data)
    for i, key in enumerate(keys):
        comma = b"," if i < len(keys) - 1 else b""
        value = data[key]
        if key == "nodes" and isinstance(value, dict) and value:
            lines.append(orjson.dumps(key) + b": {")
            dumps = orjson.dumps
            lines.append(b",\n".join([dumps(k) + b": " + dumps(v) for k, v in value.items()]))
            lines.append(b"}" + comma)
        else:
            lines.append(orjson.dumps(key) + b": " + orjson.dumps(value) + comma)
    lines.append(b"}\n")
    return b"\n".join(lines)


def dump_line(data: Any) -> bytes:
    """One compact JSON line (CLI output). orjson when it is loaded anyway (large documents)."""
    if "orjson" in sys.modules:
        import orjson

        return orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE)
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
