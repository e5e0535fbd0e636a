"""Node and document ids: short, random, Crockford base32 (no i, l, o, u), prefix-addressable."""

from __future__ import annotations

import os
from collections.abc import Container, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
ID_LENGTH = 12  # 60 bits: collisions are checked anyway, but stay vanishingly rare

# While an operation runs under `recording`, the ids it draws are noted; under `replaying`,
# the same ids are drawn again in the same order. loom.session replays a change made in
# memory on the file's latest version, and it must create the very nodes it created here.
_script: ContextVar[tuple[list[str], bool] | None] = ContextVar("loom_id_script", default=None)


def new_id(taken: Container[str] = ()) -> str:
    """A fresh id not in `taken`."""
    script = _script.get()
    if script is not None:
        ids, replay = script
        if replay and ids:
            candidate = ids.pop(0)
            if candidate not in taken:
                return candidate
    while True:
        raw = os.urandom(ID_LENGTH)  # os.urandom: `secrets` costs imports on every command
        candidate = "".join(ALPHABET[b & 31] for b in raw)
        if candidate not in taken:
            if script is not None and not script[1]:
                script[0].append(candidate)
            return candidate


@contextmanager
def recording() -> Iterator[list[str]]:
    """Note every id drawn inside the block, in order, into the yielded list."""
    ids: list[str] = []
    token = _script.set((ids, False))
    try:
        yield ids
    finally:
        _script.reset(token)


@contextmanager
def replaying(ids: list[str]) -> Iterator[None]:
    """Draw `ids` again, in order, inside the block (fresh ones once they run out or clash)."""
    token = _script.set((list(ids), True))
    try:
        yield
    finally:
        _script.reset(token)
