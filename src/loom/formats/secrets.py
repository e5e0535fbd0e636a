"""Secrets in foreign files: fields that look like credentials are never copied into a document."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

_KEY_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")

# A key holding any of these words is a secret: "client_secret", "passwordHint", "Authorization".
_SECRET_WORDS = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "secrets",
        "authorization",
        "credential",
        "credentials",
        "apikey",
        "apikeys",
    }
)

# A key ending with one of these: "apiKey", "openaiKey", "access_token", "X-Auth", "key".
_SECRET_ENDINGS = frozenset(("key", "token", "auth", "pwd", "cookie"))

# Ordinary keys with those endings, as foreign formats use them (words joined, lower case).
_NOT_SECRET = frozenset(
    {
        "togglekey",
        "hotkey",
        "shortcutkey",
        "sortkey",
        "primarykey",
        "foreignkey",
        "generatedtoken",
        "bostoken",
        "eostoken",
        "padtoken",
        "unktoken",
        "stoptoken",
    }
)


def secret_key(name: object) -> bool:
    """Whether a field's name says it holds a credential (case and separators ignored)."""
    return isinstance(name, str) and _secret_name(name)


@functools.lru_cache(maxsize=4096)  # imported files repeat the same few keys on every node
def _secret_name(name: str) -> bool:
    words = [w.lower() for w in _KEY_WORDS.findall(name)]
    joined = "".join(words)
    if not words or joined in _NOT_SECRET:
        return False
    return (
        words[-1] in _SECRET_ENDINGS
        or any(w in _SECRET_WORDS for w in words)
        or joined.endswith(("apikey", "apikeys"))
    )


def drop_secrets(value: Any) -> tuple[Any, int]:
    """A copy of `value` (parsed JSON) without secret-looking keys at any depth, and how many
    keys were dropped. A "token" beside a "logprob" is a generated token, not a secret."""
    if not isinstance(value, dict | list | tuple):
        return value, 0
    dropped = 0
    top: Any = {} if isinstance(value, dict) else []
    stack: list[tuple[Any, Any]] = [(value, top)]
    while stack:
        source, target = stack.pop()
        if isinstance(source, dict):
            generated = "logprob" in source or "logprobs" in source
            items: Iterable[tuple[Any, Any]] = source.items()
        else:
            generated = False
            items = enumerate(source)
        for key, item in items:
            if isinstance(source, dict) and secret_key(key) and not (generated and key == "token"):
                dropped += 1
                continue
            if isinstance(item, dict | list | tuple):
                copy: Any = {} if isinstance(item, dict) else []
                stack.append((item, copy))
                item = copy
            if isinstance(target, dict):
                target[key] = item
            else:
                target.append(item)
    return top, dropped
