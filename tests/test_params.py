"""Canonical parameters: the table, validation, pass-through, and layered resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loom import journal, ops
from loom.config import ModelConfig
from loom.document import Document
from loom.errors import InvalidOperation, UsageError
from loom.sampling.params import (
    BUILTIN,
    PARAMS,
    STICKY_KEY,
    LayerInputs,
    backend_families,
    canonical_name,
    clear_sticky,
    format_explain,
    layers_for,
    parse_assignments,
    resolve,
    set_sticky,
    split_passthrough,
    validate,
)

MODEL = ModelConfig("m", "openai", "base-1", params={"temperature": 0.7, "max_tokens": 40})


def tree() -> tuple[Document, dict[str, str]]:
    """root → a → a1, and root → b (a sibling branch)."""
    doc = Document.new()
    root = ops.add_child(doc, None, "Once").id
    a = ops.add_child(doc, root, " upon").id
    a1 = ops.add_child(doc, a, " a time").id
    b = ops.add_child(doc, root, " more").id
    return doc, {"root": root, "a": a, "a1": a1, "b": b}


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------


def test_table_has_every_canonical_parameter() -> None:
    """The brief's parameter list is all there, each with a type and a description."""
    wanted = [
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "typical_p",
        "top_n_sigma",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "repeat_last_n",
        "logit_bias",
        "seed",
        "max_tokens",
        "stop",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "dynatemp_range",
        "dynatemp_exponent",
        "xtc_probability",
        "xtc_threshold",
        "dry_multiplier",
        "dry_base",
        "dry_allowed_length",
        "logprobs",
        "n",
    ]
    assert set(wanted) <= set(PARAMS)
    for param in PARAMS.values():
        assert param.description and param.group
        if param.numeric:
            assert param.low is not None, param.name
        if param.neutral is not None and param.numeric:
            assert param.contains(param.neutral), param.name


def test_neutral_values_are_valid() -> None:
    neutral = {p.name: p.neutral for p in PARAMS.values() if p.neutral is not None}
    assert validate(neutral) == neutral


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def test_strings_from_the_command_line_are_coerced() -> None:
    got = validate(
        {
            "temperature": "0.7",
            "top_k": "40",
            "max_tokens": "64.0",
            "seed": 3,
            "ignore_eos": "yes",
            "logprobs": "5",
            "stop": "\\n\\n",
            "dry_sequence_breakers": '["\\n", ":"]',
            "logit_bias": "50256:-100, 198:5",
        }
    )
    assert got == {
        "temperature": 0.7,
        "top_k": 40,
        "max_tokens": 64,
        "seed": 3,
        "ignore_eos": True,
        "logprobs": 5,
        "stop": ["\n\n"],
        "dry_sequence_breakers": ["\n", ":"],
        "logit_bias": {"50256": -100.0, "198": 5.0},
    }
    assert isinstance(got["temperature"], float) and isinstance(got["top_k"], int)


def test_more_coercions() -> None:
    assert validate({"logprobs": "true"}) == {"logprobs": True}
    assert validate({"logprobs": False}) == {"logprobs": False}
    assert validate({"stop": '["\\n", "###"]'}) == {"stop": ["\n", "###"]}
    assert validate({"stop": ("a", "b")}) == {"stop": ["a", "b"]}
    assert validate({"logit_bias": '{"13": 2}'}) == {"logit_bias": {"13": 2.0}}
    assert validate({"logit_bias": {13: -1}}) == {"logit_bias": {"13": -1.0}}
    assert validate({"ignore_eos": "0"}) == {"ignore_eos": False}
    assert validate({"temperature": 1}) == {"temperature": 1.0}


def test_names_aliases_and_unset() -> None:
    got = validate({"top-p": "0.9", "repeat_penalty": 1.1, "num_predict": 20, "temp": "none"})
    assert got == {"top_p": 0.9, "repetition_penalty": 1.1, "max_tokens": 20, "temperature": None}
    assert canonical_name("Max-Tokens") == "max_tokens"
    assert validate({"stop": "unset"}) == {"stop": None}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"temperature": 9}, "temperature must be a number from 0 to 5 (got 9)"),
        ({"temperature": "hot"}, "temperature must be a number from 0 to 5 (got 'hot')"),
        ({"temperature": "nan"}, "temperature must be a number from 0 to 5"),
        ({"temperature": True}, "temperature must be a number"),
        ({"top_p": 1.5}, "top_p must be a number from 0 to 1 (got 1.5)"),
        ({"top_k": -1}, "top_k must be a whole number ≥ 0 (got -1)"),
        ({"top_k": "2.5"}, "top_k must be a whole number ≥ 0 (got '2.5')"),
        ({"repetition_penalty": 0}, "repetition_penalty must be a number above 0 up to 10"),
        ({"mirostat": 3}, "mirostat must be a whole number from 0 to 2 (got 3)"),
        ({"max_tokens": 0}, "max_tokens must be a whole number ≥ 1 (got 0)"),
        ({"logprobs": 500}, "logprobs must be true, false or a whole number from 0 to 100"),
        ({"ignore_eos": "maybe"}, "ignore_eos must be true or false (got 'maybe')"),
        ({"stop": ["ok", ""]}, "stop must be a string or a list of strings"),
        ({"stop": "[broken"}, "stop must be a string or a list of strings"),
        ({"logit_bias": "13=4"}, "logit_bias must be a map of token to bias"),
        ({"logit_bias": {"13": 500}}, "logit_bias must be a map of token to bias"),
        ({"temprature": 1}, "unknown parameter 'temprature' (did you mean temperature?)"),
        ({"tfs_z": 1}, "unknown parameter 'tfs_z'"),
        ({"temp": 1, "temperature": 1}, "temperature is given twice (as 'temp' and 'temperature')"),
        ({".x": 1}, "bad pass-through key '.x'"),
        ({"llamacpp.": 1}, "bad pass-through key 'llamacpp.'"),
        ({"openai.x": "{bad"}, "openai.x looks like JSON but is not valid"),
        (
            {"llamcpp.cache_prompt": 1},
            "unknown backend or parameter 'llamcpp' in 'llamcpp.cache_prompt' (did you mean llamacpp?)",
        ),
        ({"logit_bais": {"1": 2}}, "(did you mean logit_bias?)"),
    ],
)
def test_validation_errors_are_one_line_and_name_the_parameter(
    params: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidOperation) as err:
        validate(params)
    assert message in err.value.message
    assert "\n" not in err.value.message


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-10, max_value=10))
def test_temperature_is_accepted_exactly_within_its_range(x: float) -> None:
    if 0 <= x <= 5:
        assert validate({"temperature": str(x)}) == {"temperature": x}
    else:
        with pytest.raises(InvalidOperation):
            validate({"temperature": x})


def test_parse_assignments() -> None:
    assert parse_assignments(["temperature=0.7", "stop==="]) == {"temperature": "0.7", "stop": "=="}
    with pytest.raises(UsageError, match="bad --param 'temperature'"):
        parse_assignments(["temperature"])


# ---------------------------------------------------------------------------
# Pass-through
# ---------------------------------------------------------------------------


def test_namespaced_keys_reach_only_their_backend_family() -> None:
    params = validate(
        {
            "temperature": 0.8,
            "llamacpp.cache_prompt": "false",
            "openai.reasoning_effort": "none",
            "vllm.guided_choice": '["a", "b"]',
            "llamacpp.n_keep": "12",
        }
    )
    assert params["openai.reasoning_effort"] is None  # "none" unsets, as everywhere
    assert split_passthrough(params, "llamacpp") == (
        {"temperature": 0.8},
        {"cache_prompt": False, "n_keep": 12},
    )
    assert split_passthrough(params, "openai") == ({"temperature": 0.8}, {})
    assert split_passthrough(params, ["vllm", "openai"]) == (
        {"temperature": 0.8},
        {"guided_choice": ["a", "b"]},
    )
    assert split_passthrough(validate({"openai.reasoning_effort": "low"}), "openai")[1] == {
        "reasoning_effort": "low"
    }


def test_toml_nested_tables_become_namespaced_keys() -> None:
    """TOML writes `llamacpp.cache_prompt = false` as a nested table."""
    got = validate({"llamacpp": {"cache_prompt": False}, "logit_bias": {"1": 2}})
    assert got == {"llamacpp.cache_prompt": False, "logit_bias": {"1": 2.0}}


def test_namespaces_are_open_ended_and_case_insensitive() -> None:
    got = validate({"LlamaCpp.cache_prompt": True, "myserver.Knob": 1})
    assert got == {"llamacpp.cache_prompt": True, "myserver.Knob": 1}


def test_backend_families() -> None:
    assert backend_families(MODEL) == ("openai",)
    assert backend_families(ModelConfig("c", "openai-chat", "x")) == ("openai", "openai-chat")
    assert backend_families(ModelConfig("e", "embedded", "x")) == ("embedded", "llamacpp")
    local = ModelConfig("v", "openai", "x", options={"family": "vllm"})
    assert backend_families(local) == ("openai", "vllm")
    both = ModelConfig("v", "openai-chat", "x", options={"family": ["llamacpp", "openai"]})
    assert backend_families(both) == ("openai", "openai-chat", "llamacpp")


# ---------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------


def test_later_layers_win_and_the_source_is_remembered() -> None:
    got = resolve(
        [
            ("builtin", {"max_tokens": 256}),
            ("model", {"temperature": 0.7, "max_tokens": 40}),
            ("user", {"top_p": 0.95}),
            ("preset:creative", {"temperature": 1.1, "min_p": 0.07}),
            ("preset:single-line", {"stop": ["\n"], "max_tokens": 48}),
            ("document", {"min_p": 0.05}),
            ("sticky:aaa", {"top_p": 0.9}),
            ("sticky:bbb", {"top_p": 0.8}),
            ("flags", {"temperature": "0.9"}),
        ]
    )
    assert got.values == {
        "max_tokens": 48,
        "temperature": 0.9,
        "top_p": 0.8,
        "min_p": 0.05,
        "stop": ["\n"],
    }
    assert got.source == {
        "max_tokens": "preset:single-line",
        "temperature": "flags",
        "top_p": "sticky:bbb",
        "min_p": "document",
        "stop": "preset:single-line",
    }
    rows = {r.param: r for r in got.explain()}
    assert rows["temperature"].overridden == (("preset:creative", 1.1), ("model", 0.7))
    assert rows["max_tokens"].overridden == (("model", 40), ("builtin", 256))
    assert rows["stop"].overridden == ()
    assert [r.param for r in got.explain()] == [
        "temperature",
        "top_p",
        "min_p",
        "max_tokens",
        "stop",
    ]
    assert rows["top_p"].to_dict() == {
        "param": "top_p",
        "value": 0.8,
        "layer": "sticky:bbb",
        "overridden": [{"layer": "sticky:aaa", "value": 0.9}, {"layer": "user", "value": 0.95}],
    }
    text = format_explain(got.explain())
    assert "top_p" in text and "sticky:bbb" in text and "sticky:aaa=0.9" in text


def test_none_unsets_and_later_layers_can_set_again() -> None:
    got = resolve([("model", {"top_k": 40}), ("document", {"top_k": None})])
    assert "top_k" not in got.values and "top_k" not in got.source
    row = got.explain()[0]
    assert (row.param, row.value, row.layer) == ("top_k", None, "document")
    assert "(unset)" in format_explain([row])
    again = resolve(
        [("model", {"top_k": 40}), ("document", {"top_k": "unset"}), ("flags", {"top_k": 5})]
    )
    assert again.values == {"top_k": 5} and again.source == {"top_k": "flags"}


def test_errors_name_the_layer() -> None:
    with pytest.raises(InvalidOperation, match=r"^preset:hot: temperature must be .* \(got 9\)$"):
        resolve([("builtin", {}), ("preset:hot", {"temperature": 9})])


def test_pass_through_keys_resolve_with_provenance() -> None:
    got = resolve(
        [("user", {"llamacpp.cache_prompt": True}), ("flags", {"llamacpp.cache_prompt": "false"})]
    )
    assert got.values == {"llamacpp.cache_prompt": False}
    assert got.source == {"llamacpp.cache_prompt": "flags"}
    assert got.explain()[0].description == "passed through to the backend as is"


# ---------------------------------------------------------------------------
# Gathering the layers from a document
# ---------------------------------------------------------------------------


def test_layers_for_gathers_every_layer_in_order(isolated_home: Path) -> None:
    doc, ids = tree()
    ops.set_document_field(doc, "defaults", {"params": {"min_p": 0.05, "top_p": 0.9}})
    set_sticky(doc, ids["root"], {"top_p": 0.8, "top_k": 50})
    set_sticky(doc, ids["a"], {"top_p": 0.7})
    set_sticky(doc, ids["a1"], {"presence_penalty": 0.2})
    layers = layers_for(
        doc,
        ids["a1"],
        MODEL,
        presets=["creative", "single-line"],
        flags={"seed": 7},
        user_params={"repeat_last_n": 128},
    )
    names = [name for name, _ in layers]
    assert names == [
        "builtin",
        "model",
        "user",
        "preset:creative",
        "preset:single-line",
        "document",
        f"sticky:{ids['root']}",
        f"sticky:{ids['a']}",
        f"sticky:{ids['a1']}",
        "flags",
    ]
    got = resolve(layers)
    assert got.source["max_tokens"] == "preset:single-line"
    assert got.source["temperature"] == "preset:creative"
    assert got.source["repeat_last_n"] == "user"
    assert got.values["min_p"] == 0.05 and got.source["min_p"] == "document"
    assert got.values["top_p"] == 0.7 and got.source["top_p"] == f"sticky:{ids['a']}"  # nearest
    assert got.values["top_k"] == 50 and got.source["top_k"] == f"sticky:{ids['root']}"
    assert got.source["presence_penalty"] == f"sticky:{ids['a1']}"  # the node itself counts
    assert got.source["seed"] == "flags"


def test_builtin_and_model_layers() -> None:
    doc, ids = tree()
    got = resolve(layers_for(doc, ids["a"], None))
    assert got.values == dict(BUILTIN) and set(got.source.values()) == {"builtin"}
    got = resolve(layers_for(doc, ids["a"], MODEL))
    assert got.values == {"max_tokens": 40, "temperature": 0.7}
    assert got.source == {"max_tokens": "model", "temperature": "model"}


def test_sticky_inherits_down_but_never_leaks_to_a_sibling() -> None:
    doc, ids = tree()
    set_sticky(doc, ids["a"], {"temperature": 1.3})
    for inside in ("a", "a1"):
        got = resolve(layers_for(doc, ids[inside], MODEL))
        assert (
            got.values["temperature"] == 1.3 and got.source["temperature"] == f"sticky:{ids['a']}"
        )
    for outside in ("b", "root"):
        got = resolve(layers_for(doc, ids[outside], MODEL))
        assert got.values["temperature"] == 0.7 and got.source["temperature"] == "model"


def test_layer_inputs_record_depth_and_take_extra_presets() -> None:
    doc, ids = tree()
    inputs = LayerInputs.from_doc(doc, ids["a1"], presets=["neutral"])
    assert inputs.depth == 2
    assert LayerInputs.from_doc(doc, ids["root"]).depth == 0
    table = {"neutral": {"temperature": 1.0}, "x": {"temperature": 2.0}}
    layers = inputs.layers(MODEL, extra_presets=["x"], preset_params=table.__getitem__)
    got = resolve(layers)
    assert got.values["temperature"] == 2.0 and got.source["temperature"] == "preset:x"
    recommended = resolve(LayerInputs().layers(None, recommended={"top_p": 0.95}))
    assert recommended.source["top_p"] == "model"


def test_bad_document_defaults_are_reported() -> None:
    doc, ids = tree()
    ops.set_document_field(doc, "defaults", {"params": {"temperature": 99}})
    with pytest.raises(InvalidOperation, match=r"^document: temperature must be"):
        resolve(layers_for(doc, ids["a"], MODEL))
    ops.set_document_field(doc, "defaults", {"params": "hot"})
    with pytest.raises(InvalidOperation, match=r"defaults\.params must be a table"):
        layers_for(doc, ids["a"], MODEL)


# ---------------------------------------------------------------------------
# Sticky overrides are journaled
# ---------------------------------------------------------------------------


def test_set_and_clear_sticky_are_undoable() -> None:
    doc, ids = tree()
    before = len(journal.undo_entries(doc))
    set_sticky(doc, ids["a"], {"temperature": "1.2"})
    set_sticky(doc, ids["a"], {"top_k": 20, "llamacpp.cache_prompt": False})
    assert doc.nodes[ids["a"]]["meta"][STICKY_KEY] == {
        "temperature": 1.2,
        "top_k": 20,
        "llamacpp.cache_prompt": False,
    }
    clear_sticky(doc, ids["a"], ["temperature"])
    assert doc.nodes[ids["a"]]["meta"][STICKY_KEY] == {"top_k": 20, "llamacpp.cache_prompt": False}
    clear_sticky(doc, ids["a"])
    assert "meta" not in doc.nodes[ids["a"]]
    assert len(journal.undo_entries(doc)) == before + 4
    journal.undo(doc)
    assert doc.nodes[ids["a"]]["meta"][STICKY_KEY] == {"top_k": 20, "llamacpp.cache_prompt": False}
    journal.undo(doc)
    journal.undo(doc)
    assert doc.nodes[ids["a"]]["meta"][STICKY_KEY] == {"temperature": 1.2}


def test_sticky_keeps_other_meta_and_skips_no_ops() -> None:
    doc, ids = tree()
    ops.set_meta(doc, ids["a"], "note", "keep me")
    set_sticky(doc, ids["a"], {"top_p": 0.9})
    count = len(journal.undo_entries(doc))
    set_sticky(doc, ids["a"], {"top-p": "0.9"})  # same value: nothing to journal
    clear_sticky(doc, ids["a"], ["min_p"])  # not set: nothing to journal
    assert len(journal.undo_entries(doc)) == count
    clear_sticky(doc, ids["a"])
    assert doc.nodes[ids["a"]]["meta"] == {"note": "keep me"}


def test_sticky_validates_and_can_unset_for_a_subtree() -> None:
    doc, ids = tree()
    with pytest.raises(InvalidOperation, match="temperature must be"):
        set_sticky(doc, ids["a"], {"temperature": 7})
    with pytest.raises(UsageError, match="unknown parameter"):
        clear_sticky(doc, ids["a"], ["temprature"])
    assert "meta" not in doc.nodes[ids["a"]]
    set_sticky(doc, ids["a"], {"temperature": None})
    got = resolve(layers_for(doc, ids["a1"], MODEL))
    assert "temperature" not in got.values
    assert got.explain()[0].layer == f"sticky:{ids['a']}"


@pytest.mark.parametrize(
    "params",
    [
        {"openai.api_key": "abc"},
        {"anthropic.authorization": "x"},
        {"openai.user": "sk-" + "a1" * 12},
    ],
)
def test_a_sticky_parameter_never_keeps_a_credential(params: dict[str, Any]) -> None:
    doc, ids = tree()
    with pytest.raises(UsageError, match="credential"):
        set_sticky(doc, ids["a"], params)
    assert "meta" not in doc.nodes[ids["a"]]
    set_sticky(doc, ids["a"], {"openai.user": "alice", "max_tokens": 12})  # ordinary ones pass
