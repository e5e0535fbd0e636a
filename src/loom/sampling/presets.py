"""Named, composable sampler presets: built-ins shipped with loom, and the user's own.

Built-ins live in `loom/data/presets.toml` (read once, on first use); a user file of the
same shape, `presets.toml` in loom's config dir, adds presets and replaces built-ins of
the same name. A preset may `extends = "other"` to start from another preset's
parameters (a user preset extending its own name starts from the built-in it
replaces). Several presets compose in order, the later one winning for each key.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from loom.errors import ConfigError, InvalidOperation, NotFound
from loom.sampling.params import validate

__all__ = [
    "Preset",
    "PresetBook",
    "PresetInfo",
    "builtin_presets",
    "list_presets",
    "load_presets",
    "user_presets_file",
]

Source = Literal["builtin", "user"]
_RESERVED = frozenset({"description", "extends", "random"})
# Preset names appear inside --mix specs (`2@model:creative+single-line`), so no : + , @.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Preset:
    """One preset as written: its own parameters, before `extends` is followed."""

    name: str
    description: str
    params: Mapping[str, Any]  # validated, canonical names
    source: Source
    origin: str  # "builtin" or the user file's path
    extends: str | None = None
    random: bool | None = None  # None: as the preset it extends (default: drawn)


@dataclass(frozen=True)
class PresetInfo:
    """A preset as listed: its full parameters, and where it came from."""

    name: str
    description: str
    source: Source
    params: dict[str, Any]  # with `extends` followed
    extends: str | None = None
    overrides_builtin: bool = False
    random: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "extends": self.extends,
            "overrides_builtin": self.overrides_builtin,
            "random": self.random,
            "params": self.params,
        }


def parse_presets(data: Mapping[str, Any], source: Source, origin: str) -> dict[str, Preset]:
    """Validate a parsed presets file into presets, in file order."""
    out: dict[str, Preset] = {}
    for name, table in data.items():
        if name == "version":
            continue
        where = f"{origin}: preset {name!r}"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: must be a table of parameters", file=origin)
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"{where}: names are letters, digits, '-' and '_' (they appear in --mix specs)",
                file=origin,
            )
        description, extends, random = (
            table.get("description", ""),
            table.get("extends"),
            table.get("random"),
        )
        if not isinstance(description, str) or not (extends is None or isinstance(extends, str)):
            raise ConfigError(f"{where}: description and extends must be text", file=origin)
        if random is not None and not isinstance(random, bool):
            raise ConfigError(f"{where}: random must be true or false", file=origin)
        try:
            params = validate({k: v for k, v in table.items() if k not in _RESERVED})
        except InvalidOperation as exc:
            raise ConfigError(f"{where}: {exc.message}", file=origin) from None
        out[name] = Preset(name, description, params, source, origin, extends, random)
    return out


def _read_toml(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin}: not valid TOML: {exc}", file=origin) from None


@functools.cache
def builtin_presets() -> Mapping[str, Preset]:
    """The presets shipped with loom, parsed once on first use."""
    text = resources.files("loom").joinpath("data", "presets.toml").read_text("utf-8")
    return parse_presets(_read_toml(text, "builtin"), "builtin", "builtin")


def user_presets_file() -> Path:
    from loom.workspace import loom_home

    return loom_home() / "presets.toml"


def _user_presets(path: Path) -> dict[str, Preset]:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}", file=str(path)) from None
    return parse_presets(_read_toml(text, str(path)), "user", str(path))


@dataclass(frozen=True)
class PresetBook:
    """Built-in and user presets together, and the operations on them."""

    builtin: Mapping[str, Preset]
    user: Mapping[str, Preset]

    def names(self) -> list[str]:
        """Built-ins in file order, then presets only the user has."""
        return list(dict.fromkeys([*self.builtin, *self.user]))

    def __contains__(self, name: object) -> bool:
        return name in self.user or name in self.builtin

    def get(self, name: str) -> Preset:
        preset = self.user.get(name) or self.builtin.get(name)
        if preset is None:
            known = ", ".join(self.names())
            raise NotFound(f"unknown preset {name!r} (known: {known})")
        return preset

    def chain(self, name: str) -> list[Preset]:
        """The preset and those it extends, base first. Raises ConfigError on a cycle."""
        preset = self.get(name)
        out = [preset]
        seen = {(preset.source, preset.name)}
        while preset.extends is not None:
            base = preset.extends
            if base == preset.name and preset.source == "user" and base in self.builtin:
                target = self.builtin[base]  # a user preset refining the built-in it replaces
            elif base in self:
                target = self.get(base)
            else:
                raise ConfigError(
                    f"{preset.origin}: preset {preset.name!r} extends unknown preset {base!r}",
                    file=preset.origin,
                )
            if (target.source, target.name) in seen:
                cycle = " extends ".join([*(p.name for p in out), target.name])
                raise ConfigError(
                    f"{preset.origin}: presets extend each other in a cycle: {cycle}",
                    file=preset.origin,
                )
            seen.add((target.source, target.name))
            out.append(target)
            preset = target
        return list(reversed(out))

    def params(self, name: str) -> dict[str, Any]:
        """A preset's full parameters, `extends` followed (the derived preset wins)."""
        merged: dict[str, Any] = {}
        for preset in self.chain(name):
            merged.update(preset.params)
        return merged

    def compose(self, names: Sequence[str]) -> dict[str, Any]:
        """Several presets' parameters together; a later preset wins for each key."""
        merged: dict[str, Any] = {}
        for name in names:
            merged.update(self.params(name))
        return merged

    def layers(self, names: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
        """`(preset:<name>, params)` resolution layers, one per preset, in order."""
        return [(f"preset:{name}", self.params(name)) for name in names]

    def drawn(self, name: str) -> bool:
        """Whether --random-preset may draw this preset (inherited through `extends`)."""
        flags = [p.random for p in self.chain(name) if p.random is not None]
        return flags[-1] if flags else True

    def random_pool(self) -> list[str]:
        """The presets --random-preset draws from, in listing order."""
        return [name for name in self.names() if self.drawn(name)]

    def info(self, name: str) -> PresetInfo:
        preset = self.get(name)
        return PresetInfo(
            name=name,
            description=preset.description
            or (f"extends {preset.extends}" if preset.extends else ""),
            source=preset.source,
            params=self.params(name),
            extends=preset.extends,
            overrides_builtin=preset.source == "user" and name in self.builtin,
            random=self.drawn(name),
        )

    def check(self) -> None:
        """Follow every preset's `extends` now, so a broken file fails on load."""
        for name in self.names():
            self.chain(name)


def load_presets(user_file: str | Path | None = None) -> PresetBook:
    """Built-ins plus the user's presets (`user_presets_file()` unless another is given)."""
    path = Path(user_file) if user_file is not None else user_presets_file()
    book = PresetBook(builtin_presets(), _user_presets(path))
    book.check()
    return book


def list_presets(book: PresetBook | None = None) -> list[PresetInfo]:
    """Every preset with its description, source (builtin/user) and full parameters."""
    book = book or load_presets()
    return [book.info(name) for name in book.names()]
