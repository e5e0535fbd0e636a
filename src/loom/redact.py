"""Keeping secrets out of what loom stores and prints: URLs without credentials, keys masked."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/")


def safe_url(url: str) -> str:
    """The URL without credentials, query or fragment (some providers take keys there)."""
    # Without a scheme ("user:pw@host/v1"), urlsplit takes "user" for one and misses the host.
    bare = not _SCHEME.match(url)
    try:
        parts = urlsplit("//" + url if bare else url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    shown = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return shown.removeprefix("//") if bare else shown


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
