"""Secrets in foreign files: credentials are never copied into a document.

What a secret looks like is `loom.redact`'s to say; this walks parsed JSON with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from loom.redact import mask_secrets, secret_key

__all__ = ["drop_secrets", "secret_key"]


def drop_secrets(value: Any) -> tuple[Any, int]:
    """A copy of `value` (parsed JSON) without secrets at any depth, and how many it held.

    Keys whose name says credential are dropped ("apiKey", "Authorization"); text values
    shaped like one (an `sk-…` key, a bearer token, a URL's user:password) are masked
    where they stand, so "https://user:sk-…@host/v1" keeps its host. A "token" beside a
    "logprob" is a generated token, not a secret.
    """
    if isinstance(value, str):
        masked = mask_secrets(value)
        return masked, int(masked != value)
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
            if isinstance(item, str):
                masked = mask_secrets(item)
                if masked != item:
                    dropped += 1
                    item = masked
            elif isinstance(item, dict | list | tuple):
                copy: Any = {} if isinstance(item, dict) else []
                stack.append((item, copy))
                item = copy
            if isinstance(target, dict):
                target[key] = item
            else:
                target.append(item)
    return top, dropped
