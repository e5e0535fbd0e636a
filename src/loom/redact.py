"""What a secret looks like, and keeping secrets out of what loom stores and prints.

The one place that knows: field names that hold credentials (`secret_key`), values
shaped like provider keys, bearer tokens or credentials inside URLs (`mask_secrets`),
URLs shown without their credentials (`safe_url`) and known secrets masked (`redact`).
`loom.formats.secrets` applies them to imported data; errors, notes and exports
pass through them before they are written.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/")

# ---- names ---------------------------------------------------------------------------------

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
        "bearer",
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
    """Whether a field's name says it holds a credential (case, separators and digits ignored):
    "apiKey", "openai_api_key_v2", "apiKeyOpenAI", "Authorization", "bearer"."""
    return isinstance(name, str) and _secret_name(name)


@functools.lru_cache(maxsize=4096)  # imported files repeat the same few keys on every node
def _secret_name(name: str) -> bool:
    words = [w.lower() for w in _KEY_WORDS.findall(name)]
    joined = "".join(words)
    if not words or joined in _NOT_SECRET:
        return False
    return (
        words[-1] in _SECRET_ENDINGS or any(w in _SECRET_WORDS for w in words) or "apikey" in joined
    )


# ---- values --------------------------------------------------------------------------------

# Provider key shapes, long enough that prose never matches: OpenAI and Anthropic (sk-, sk-proj-,
# sk-ant-), Hugging Face (hf_), Google (AIza), Groq (gsk_), xAI (xai-), GitHub, AWS access keys.
_KEY_SHAPES = (
    r"sk-[A-Za-z0-9_\-]{20,}",
    r"hf_[A-Za-z0-9]{30,}",
    r"AIza[0-9A-Za-z_\-]{35}",
    r"gsk_[A-Za-z0-9]{40,}",
    r"xai-[A-Za-z0-9]{40,}",
    r"(?:ghp|gho|ghs|ghu)_[A-Za-z0-9]{36,}",
    r"github_pat_[A-Za-z0-9_]{40,}",
    r"AKIA[0-9A-Z]{16}",
)
# A bearer token: one long token after "Bearer" with a digit in it ("bearer of bad news" is prose).
_BEARER = r"(?<=\bBearer )(?=[A-Za-z0-9._~+/=\-]*[0-9])[A-Za-z0-9._~+/=\-]{16,}"
# user:password@ in a URL (the password may hold anything but the characters that end it).
_URL_USERINFO = r"(?<=://)[^/\s:@]*:[^/\s@]+(?=@)"
_SECRET_VALUE = re.compile(
    "|".join(
        [
            r"(?<![A-Za-z0-9_\-])(?:" + "|".join(_KEY_SHAPES) + r")(?![A-Za-z0-9_\-])",
            _BEARER,
            _URL_USERINFO,
        ]
    ),
    re.IGNORECASE,
)
# ?api_key=… / &token=… in a URL: the value of a secret-named query parameter.
_QUERY = re.compile(r"(?<=[?&])([A-Za-z0-9_.\-]+)=([^&#\s\"']+)")
# Cheap first look: a value without any of these cannot hold a secret of the shapes above.
_HINTS = ("sk-", "hf_", "aiza", "gsk_", "xai-", "gh", "akia", "bearer", "://", "=")


def has_secret(text: str) -> bool:
    """Whether `text` holds a value shaped like a credential."""
    return mask_secrets(text) != text


def mask_secrets(text: str) -> str:
    """`text` with credential-shaped values replaced by ***: provider API keys, bearer tokens,
    the user:password of URLs, and secret-named URL query values (?api_key=…)."""
    lowered = text.lower()
    if not any(hint in lowered for hint in _HINTS):
        return text
    text = _SECRET_VALUE.sub(MASK, text)
    if "=" in text:
        text = _QUERY.sub(
            lambda m: f"{m.group(1)}={MASK}" if secret_key(m.group(1)) else m.group(0), text
        )
    return text


# ---- URLs and known secrets ----------------------------------------------------------------


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
    """`text` with each of `secrets` (values known to be secret) replaced by ***."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text
