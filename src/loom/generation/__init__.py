"""Generation: backends, the engine that runs N branches, and what each node records."""

from __future__ import annotations

import hashlib
from typing import Any


def prompt_digest(prompt: str) -> dict[str, Any]:
    """What a node records about its prompt: a short hash and the length, never the text."""
    return {
        "sha256": hashlib.sha256(prompt.encode("utf-8", "replace")).hexdigest()[:16],
        "chars": len(prompt),
    }
