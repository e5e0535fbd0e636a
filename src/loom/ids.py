"""Node and document ids: short, random, Crockford base32 (no i, l, o, u), prefix-addressable."""

from __future__ import annotations

import os
from collections.abc import Container

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
ID_LENGTH = 12  # 60 bits: collisions are checked anyway, but stay vanishingly rare


def new_id(taken: Container[str] = ()) -> str:
    """A fresh id not in `taken`."""
    while True:
        raw = os.urandom(ID_LENGTH)  # os.urandom: `secrets` costs imports on every command
        candidate = "".join(ALPHABET[b & 31] for b in raw)
        if candidate not in taken:
            return candidate
