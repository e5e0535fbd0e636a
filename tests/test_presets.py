"""Presets: the built-ins, the user's file, composition, `extends` and its cycles."""

from __future__ import annotations

from pathlib import Path

import pytest

from loom.errors import ConfigError, NotFound
from loom.sampling.params import PARAMS, resolve
from loom.sampling.presets import (
    PresetBook,
    builtin_presets,
    list_presets,
    load_presets,
    user_presets_file,
)

TRUNCATION_AND_PENALTIES = (
    "top_p",
    "top_k",
    "min_p",
    "typical_p",
    "top_n_sigma",
    "xtc_probability",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "dry_multiplier",
    "mirostat",
    "dynatemp_range",
)


def write_user(home: Path, text: str) -> Path:
    path = home / "presets.toml"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# Built-ins
# ---------------------------------------------------------------------------


def test_builtins_are_there_and_sensible() -> None:
    book = load_presets()
    names = book.names()
    for wanted in (
        "neutral",
        "creative",
        "precise",
        "single-line",
        "paragraph",
        "wild",
        "mirostat",
        "long",
    ):
        assert wanted in names
    neutral = book.params("neutral")
    assert neutral["temperature"] == 1.0
    for name in TRUNCATION_AND_PENALTIES:
        assert neutral[name] == PARAMS[name].neutral, name
    creative = book.params("creative")
    assert 0.05 <= creative["min_p"] <= 0.1 and 1.0 < creative["temperature"] <= 1.2
    assert creative["top_k"] == 0 and creative["top_p"] == 1.0  # other truncation off
    precise = book.params("precise")
    assert precise["temperature"] < 1 and precise["top_p"] < 1
    assert book.params("single-line") == {"stop": ["\n"], "max_tokens": 48}
    assert book.params("paragraph")["stop"] == ["\n\n"]
    assert 100 <= book.params("paragraph")["max_tokens"] <= 400
    assert book.params("mirostat")["mirostat"] == 2
    assert book.params("wild")["temperature"] > 1.4 and book.params("wild")["min_p"] >= 0.1
    assert book.params("long")["max_tokens"] >= 512 and book.params("long")["stop"] is None


def test_every_builtin_has_a_description_and_lists_as_builtin() -> None:
    infos = list_presets()
    assert [i.name for i in infos] == list(builtin_presets())
    for info in infos:
        assert info.description and info.source == "builtin" and not info.overrides_builtin
        resolve([(f"preset:{info.name}", info.params)])  # valid all the way through
    creative = next(i for i in infos if i.name == "creative").to_dict()
    assert creative["extends"] == "neutral" and creative["params"]["min_p"] == 0.07


def test_builtins_are_read_once() -> None:
    assert builtin_presets() is builtin_presets()


def test_random_pool_holds_sampling_presets_only() -> None:
    pool = load_presets().random_pool()
    assert {"neutral", "creative", "wild", "mirostat"} <= set(pool)
    assert not {"single-line", "paragraph", "long", "phrase", "greedy"} & set(pool)


# ---------------------------------------------------------------------------
# Composition
# ---------------------------------------------------------------------------


def test_composition_later_wins_per_key() -> None:
    book = load_presets()
    got = book.compose(["creative", "single-line"])
    assert got["temperature"] == 1.1 and got["stop"] == ["\n"] and got["max_tokens"] == 48
    assert book.compose(["precise", "creative"])["temperature"] == 1.1
    assert book.compose(["creative", "precise"])["temperature"] == 0.5
    assert book.compose(["single-line", "long"])["stop"] is None  # long unsets the stop
    layers = book.layers(["creative", "single-line"])
    assert [name for name, _ in layers] == ["preset:creative", "preset:single-line"]
    resolved = resolve(layers)
    assert resolved.source["stop"] == "preset:single-line"
    assert resolved.source["min_p"] == "preset:creative"


def test_unknown_preset() -> None:
    with pytest.raises(NotFound, match=r"unknown preset 'spicy' \(known: neutral, creative"):
        load_presets().params("spicy")


# ---------------------------------------------------------------------------
# The user's file
# ---------------------------------------------------------------------------


def test_user_presets_add_and_override(isolated_home: Path) -> None:
    assert user_presets_file() == isolated_home / "presets.toml"
    write_user(
        isolated_home,
        """
        [creative]
        description = "my creative"
        temperature = 1.3

        [mine]
        extends = "creative"
        max_tokens = "80"
        llamacpp.cache_prompt = false
        """,
    )
    book = load_presets()
    assert book.params("creative") == {"temperature": 1.3}  # replaced, not merged
    assert book.params("mine") == {
        "temperature": 1.3,
        "max_tokens": 80,
        "llamacpp.cache_prompt": False,
    }
    infos = {i.name: i for i in list_presets(book)}
    assert infos["creative"].source == "user" and infos["creative"].overrides_builtin
    assert infos["mine"].source == "user" and not infos["mine"].overrides_builtin
    assert infos["mine"].description == "extends creative"
    assert infos["neutral"].source == "builtin"
    assert book.names().index("creative") == 1  # keeps its place in the listing
    assert book.names()[-1] == "mine"


def test_user_preset_can_refine_the_builtin_it_replaces(tmp_path: Path) -> None:
    path = write_user(tmp_path, '[creative]\nextends = "creative"\nmin_p = 0.1\n')
    book = load_presets(path)
    got = book.params("creative")
    assert got["min_p"] == 0.1 and got["temperature"] == 1.1 and got["top_k"] == 0
    assert [p.source for p in book.chain("creative")] == ["builtin", "builtin", "user"]


def test_random_flag_is_inherited_and_overridable(tmp_path: Path) -> None:
    path = write_user(
        tmp_path,
        '[oneliner]\nextends = "single-line"\n[hot-line]\nextends = "single-line"\n'
        "random = true\ntemperature = 1.4\n",
    )
    pool = load_presets(path).random_pool()
    assert "oneliner" not in pool and "hot-line" in pool


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[a]\nextends = "b"\n[b]\nextends = "a"\n', "cycle: a extends b extends a"),
        ('[a]\nextends = "a"\n', "cycle: a extends a"),
        ('[a]\nextends = "nope"\n', "preset 'a' extends unknown preset 'nope'"),
        ("[a]\ntemperature = 9\n", "preset 'a': temperature must be a number from 0 to 5"),
        ("[a]\ntemprature = 1\n", "preset 'a': unknown parameter 'temprature'"),
        ('[a]\nrandom = "yes"\n', "random must be true or false"),
        ("[a]\ndescription = 3\n", "description and extends must be text"),
        ('["a:b"]\ntemperature = 1\n', "names are letters, digits"),
        ("a = 1\n", "preset 'a': must be a table"),
        ("[a\n", "not valid TOML"),
    ],
)
def test_bad_user_files_fail_on_load_with_the_path(tmp_path: Path, text: str, message: str) -> None:
    path = write_user(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_presets(path)
    assert message in err.value.message
    assert str(path) in err.value.message
    assert "\n" not in err.value.message


def test_missing_user_file_is_no_presets(tmp_path: Path) -> None:
    book = load_presets(tmp_path / "absent.toml")
    assert book.user == {} and "neutral" in book


def test_a_book_from_plain_data() -> None:
    book = PresetBook({}, {})
    assert book.names() == [] and book.random_pool() == []
