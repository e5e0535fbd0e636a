"""Modulation: spec parsing, every modulator's exact values, counts, determinism, provenance."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loom import ops
from loom.config import ModelConfig
from loom.document import Document
from loom.emulation.capabilities import ModelCaps
from loom.emulation.framing import seed_phrase
from loom.errors import ConfigError, InvalidOperation, UsageError
from loom.generation.engine import Branch
from loom.sampling.modulate import (
    Grid,
    Jitter,
    MixEntry,
    ModulationSpecs,
    Schedule,
    Sweep,
    needs_prompt_side_variety,
    parse_grid,
    parse_jitter,
    parse_mix,
    parse_schedule,
    parse_sweep,
    plan,
)
from loom.sampling.params import LayerInputs, set_sticky
from loom.sampling.presets import PresetBook, load_presets

A = ModelConfig("a", "openai", "base-a", params={"temperature": 0.9})
B = ModelConfig("b", "openai-chat", "chat-b")
BOOK = load_presets(user_file="/nonexistent/presets.toml")


def specs(**flags: Any) -> ModulationSpecs:
    return ModulationSpecs.parse(**flags)


def run(n: int | None, *models: ModelConfig, seed: int | None = 1, **flags: Any) -> list[Branch]:
    inputs = flags.pop("inputs", None)
    return plan(n, list(models) or [A], inputs, specs(**flags), rng_seed=seed, presets=BOOK)


def values(branches: list[Branch], param: str) -> list[Any]:
    return [b.params.get(param) for b in branches]


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def test_parse_sweep() -> None:
    assert parse_sweep("temperature=0.6:1.4") == (
        Sweep("temperature", 0.6, 1.4, False, "temperature=0.6:1.4"),
    )
    (log,) = parse_sweep("temp=0.5:2:log")
    assert (log.param, log.start, log.end, log.log) == ("temperature", 0.5, 2.0, True)
    two = parse_sweep("temperature=0.6:1.4  min_p=0.1:0")
    assert [s.param for s in two] == ["temperature", "min_p"] and two[1].spec == "min_p=0.1:0"


def test_parse_grid() -> None:
    axes = parse_grid("temperature=0.8,1.2 min_p=0.02,0.1")
    assert axes == (
        Grid("temperature", (0.8, 1.2), "temperature=0.8,1.2"),
        Grid("min_p", (0.02, 0.1), "min_p=0.02,0.1"),
    )
    (stop,) = parse_grid('stop=["\\n", "\\n\\n", ", "]')
    assert stop.values == (["\n"], ["\n\n"], [", "])
    assert parse_grid("max_tokens=16,64")[0].values == (16, 64)


def test_parse_jitter() -> None:
    assert parse_jitter("temperature=1.0±0.2") == (
        Jitter("temperature", 0.2, 1.0, "temperature=1.0±0.2"),
    )
    assert parse_jitter("temperature=1.0+-0.2")[0].spread == 0.2
    assert parse_jitter("temperature=1.0 +/- 0.2")[0].center == 1.0
    relative = parse_jitter("top_p=±0.05")[0]
    assert relative.center is None and relative.spread == 0.05
    assert parse_jitter("presence_penalty=-0.5±0.25")[0].center == -0.5


def test_parse_mix() -> None:
    assert parse_mix("2@modelA:creative,3@modelB") == (
        MixEntry("modelA:creative", 2, "2@modelA:creative"),
        MixEntry("modelB", 3, "3@modelB"),
    )
    assert [e.count for e in parse_mix("creative, precise")] == [None, None]


def test_parse_schedule() -> None:
    assert parse_schedule("temperature=1.2->0.7@8") == (
        Schedule("temperature", 1.2, 0.7, 8, 0, "temperature=1.2->0.7@8"),
    )
    later = parse_schedule("temperature=1.2 → 0.7 @ 4:12")[0]
    assert (later.from_depth, later.to_depth) == (4, 12)
    assert parse_schedule("presence_penalty=0.5->-0.5@6")[0].end == -0.5


@pytest.mark.parametrize(
    ("flag", "text", "message"),
    [
        ("sweep", "temperature=0.6", "bad --sweep 'temperature=0.6': expected PARAM=START:END"),
        ("sweep", "temperature=a:b", "bad --sweep 'temperature=a:b': temperature must be a number"),
        (
            "sweep",
            "temperature=0.6:9",
            "bad --sweep 'temperature=0.6:9': temperature must be a number from 0 to 5",
        ),
        ("sweep", "temperature=0:1:log", "a log sweep needs both ends above 0"),
        ("sweep", "temperature=0:1:cubic", "expected PARAM=START:END[:log]"),
        ("sweep", "stop=1:2", "bad --sweep 'stop=1:2': stop is not numeric"),
        ("sweep", "n=1:4", "n is not a sampler parameter loom can vary"),
        ("sweep", "temprature=0:1", "unknown parameter 'temprature' (did you mean temperature?)"),
        ("sweep", "temperature", "bad --sweep 'temperature': expected PARAM=START:END"),
        ("grid", "temperature=0.8,", "no empty values"),
        ("grid", "top_k=1,2.5", "top_k must be a whole number"),
        ("grid", "stop=[oops", "not valid JSON"),
        (
            "jitter",
            "temperature=1.0",
            "bad --jitter 'temperature=1.0': expected PARAM=CENTRE±SPREAD",
        ),
        ("jitter", "temperature=1.0±-0.2", "the spread must be a number ≥ 0"),
        ("jitter", "temperature=1.0±x", "the spread 'x' is not a number"),
        ("jitter", "temperature=7±1", "temperature must be a number from 0 to 5"),
        ("mix", "0@a", "bad --mix '0@a': a count must be at least 1"),
        ("mix", "2@", "bad --mix '2@'"),
        ("mix", "a,,b", "bad --mix"),
        ("mix", "2@a@b", "expected [COUNT@]MODEL[:PRESET]"),
        ("schedule", "temperature=1.2->0.7", "expected PARAM=FROM->TO@DEPTH"),
        ("schedule", "temperature=1.2->0.7@0", "the end depth must be after the start depth"),
        ("schedule", "temperature=1.2->0.7@5:3", "the end depth must be after the start depth"),
        ("schedule", "temperature=1.2->x@5", "temperature must be a number"),
    ],
)
def test_bad_specs_are_one_line_and_quote_the_spec(flag: str, text: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        specs(**{flag: [text]})
    assert message in err.value.message
    assert "\n" not in err.value.message


def test_conflicting_specs() -> None:
    with pytest.raises(UsageError, match=r"temperature is set by both --grid .* and --sweep"):
        specs(grid=["temperature=0.8,1.2"], sweep=["temperature=0.6:1.4"])
    with pytest.raises(UsageError, match="set by both --schedule"):
        specs(schedule=["top_p=1->0.9@4"], jitter=["top_p=0.9±0.1"])
    with pytest.raises(UsageError, match="jittered twice"):
        specs(jitter=["top_p=±0.1", "top_p=±0.2"])
    with pytest.raises(UsageError, match="--per-cell needs a --grid"):
        specs(per_cell=2)
    with pytest.raises(UsageError, match="--per-cell must be at least 1"):
        specs(grid=["top_k=1,2"], per_cell=0)
    # A relative jitter sits on top of what another modulator set.
    assert specs(sweep="temperature=0.6:1.4", jitter="temperature=±0.05").jitters


def test_empty_and_describe() -> None:
    assert ModulationSpecs().empty and specs().empty
    full = specs(
        sweep="temperature=0.6:1.4",
        grid="min_p=0,0.1",
        per_cell=2,
        jitter="top_p=±0.05",
        mix="2@a,b",
        schedule="presence_penalty=0->1@4",
        random_preset=True,
    )
    assert not full.empty
    assert full.describe() == [
        "--schedule presence_penalty=0->1@4",
        "--grid min_p=0,0.1",
        "--per-cell 2",
        "--sweep temperature=0.6:1.4",
        "--jitter top_p=±0.05",
        "--mix 2@a,b",
        "--random-preset",
    ]


# ---------------------------------------------------------------------------
# No modulation: identical children, one request
# ---------------------------------------------------------------------------


def test_no_modulation_gives_n_identical_branches_per_model() -> None:
    branches = run(3, A, B)
    assert [b.model.name for b in branches] == ["a", "a", "a", "b", "b", "b"]
    for model in ("a", "b"):
        group = [b for b in branches if b.model.name == model]
        assert all(b == group[0] for b in group)
        assert len({b.group_key() for b in group}) == 1
    assert branches[0].params == {"max_tokens": 256, "temperature": 0.9}
    assert branches[0].provenance == {"sources": {"max_tokens": "builtin", "temperature": "model"}}
    assert branches[3].params == {"max_tokens": 256}


@given(n=st.integers(1, 6), temperature=st.floats(0, 2), top_k=st.integers(0, 100))
@settings(max_examples=30, deadline=None)
def test_identical_branches_property(n: int, temperature: float, top_k: int) -> None:
    inputs = LayerInputs(presets=("creative",), flags={"temperature": temperature, "top_k": top_k})
    branches = plan(n, [A, B], inputs, ModulationSpecs(), rng_seed=None, presets=BOOK)
    assert len(branches) == 2 * n
    for model in (A, B):
        group = [b for b in branches if b.model is model]
        assert len(group) == n and all(b == group[0] for b in group)
        assert group[0].params["temperature"] == temperature


def test_n_defaults_to_the_layers_then_one() -> None:
    assert len(run(None)) == 1
    assert len(run(None, inputs=LayerInputs(document={"n": 4}))) == 4
    assert len(run(2, inputs=LayerInputs(document={"n": 4}))) == 2
    assert all("n" not in b.params for b in run(None, inputs=LayerInputs(flags={"n": 3})))
    with pytest.raises(UsageError, match="n must be at least 1"):
        run(0)


def test_pass_through_reaches_only_its_family() -> None:
    flags = {"openai.reasoning_effort": "low", "llamacpp.cache_prompt": False}
    a, b = run(1, A, B, inputs=LayerInputs(flags=flags))
    assert a.extra == {"reasoning_effort": "low"} and b.extra == {"reasoning_effort": "low"}
    assert "llamacpp.cache_prompt" not in a.provenance["sources"]
    assert a.provenance["sources"]["openai.reasoning_effort"] == "flags"
    local = ModelConfig("l", "openai", "x", options={"family": "llamacpp"})
    (c,) = run(1, local, inputs=LayerInputs(flags=flags))
    assert c.extra == {"reasoning_effort": "low", "cache_prompt": False}


# ---------------------------------------------------------------------------
# Sweep
# ---------------------------------------------------------------------------


def test_sweep_values_exactly() -> None:
    assert values(run(5, sweep="temperature=0.6:1.4"), "temperature") == [0.6, 0.8, 1.0, 1.2, 1.4]
    assert values(run(1, sweep="temperature=0.6:1.4"), "temperature") == [1.0]
    assert values(run(2, sweep="temperature=0.6:1.4"), "temperature") == [0.6, 1.4]
    assert values(run(3, sweep="temperature=1.4:0.6"), "temperature") == [1.4, 1.0, 0.6]
    assert values(run(3, sweep="temperature=0.5:2:log"), "temperature") == [0.5, 1.0, 2.0]
    assert values(run(1, sweep="temperature=0.5:2:log"), "temperature") == [1.0]
    assert values(run(4, sweep="top_k=10:100"), "top_k") == [10, 40, 70, 100]


def test_sweeps_zip_together_and_run_per_model() -> None:
    branches = run(3, A, B, sweep="temperature=0.6:1.4 min_p=0.1:0")
    assert values(branches, "temperature") == [0.6, 1.0, 1.4] * 2
    assert values(branches, "min_p") == [0.1, 0.05, 0.0] * 2
    first = branches[0].provenance
    assert first["modulators"] == ["sweep"] and first["index"] == 0
    assert first["values"] == {"temperature": 0.6, "min_p": 0.1}
    assert (
        first["sources"]["temperature"] == "sweep" and first["sources"]["max_tokens"] == "builtin"
    )
    assert first["specs"] == ["--sweep temperature=0.6:1.4", "--sweep min_p=0.1:0"]
    assert [b.provenance["index"] for b in branches] == list(range(6))


@given(
    start=st.floats(0, 5),
    end=st.floats(0, 5),
    count=st.integers(1, 12),
    log=st.booleans(),
)
@settings(max_examples=80, deadline=None)
def test_sweep_values_stay_in_range_and_are_monotone(
    start: float, end: float, count: int, log: bool
) -> None:
    if log:
        start, end = max(start, 0.01), max(end, 0.01)
    sweep = Sweep("temperature", start, end, log)
    got = [sweep.value(i, count) for i in range(count)]
    lo, hi = min(start, end), max(start, end)
    assert all(lo <= v <= hi for v in got)
    pairs = list(itertools.pairwise(got))
    assert all(a <= b for a, b in pairs) if start <= end else all(a >= b for a, b in pairs)
    if count > 1:
        assert (got[0], got[-1]) == (start, end)


# ---------------------------------------------------------------------------
# Grid
# ---------------------------------------------------------------------------


def test_grid_one_child_per_cell_by_default() -> None:
    branches = run(None, grid="temperature=0.8,1.2 min_p=0.02,0.1")
    cells = [(b.params["temperature"], b.params["min_p"]) for b in branches]
    assert cells == [(0.8, 0.02), (0.8, 0.1), (1.2, 0.02), (1.2, 0.1)]
    assert [b.provenance["cell"] for b in branches] == [0, 1, 2, 3]
    assert branches[0].provenance["sources"]["min_p"] == "grid"


def test_grid_divides_n_across_cells() -> None:
    branches = run(6, grid="temperature=0.8,1.2 min_p=0.02,0.1")
    assert [b.provenance["cell"] for b in branches] == [0, 0, 1, 1, 2, 3]
    with pytest.raises(UsageError, match="3 children cannot fill the grid's 4 cells"):
        run(3, grid="temperature=0.8,1.2 min_p=0.02,0.1")


def test_per_cell_sets_the_size_of_every_cell() -> None:
    branches = run(2, A, B, grid="temperature=0.8,1.2", per_cell=3)
    assert len(branches) == 12
    assert values(branches, "temperature") == ([0.8] * 3 + [1.2] * 3) * 2


def test_sweep_runs_within_each_grid_cell() -> None:
    branches = run(None, grid="min_p=0,0.1", per_cell=3, sweep="temperature=0.6:1.4")
    assert values(branches, "min_p") == [0.0] * 3 + [0.1] * 3
    assert values(branches, "temperature") == [0.6, 1.0, 1.4] * 2
    assert branches[0].provenance["modulators"] == ["grid", "sweep"]


@given(
    axes=st.lists(st.integers(1, 3), min_size=1, max_size=3),
    per_cell=st.one_of(st.none(), st.integers(1, 3)),
    n=st.one_of(st.none(), st.integers(1, 30)),
)
@settings(max_examples=40, deadline=None)
def test_grid_counts(axes: list[int], per_cell: int | None, n: int | None) -> None:
    names = ["temperature", "min_p", "top_p"]
    grid = " ".join(
        f"{names[i]}={','.join(str(0.1 * (v + 1)) for v in range(k))}" for i, k in enumerate(axes)
    )
    cells = 1
    for k in axes:
        cells *= k
    if per_cell is None and n is not None and n < cells:
        with pytest.raises(UsageError):
            run(n, grid=grid)
        return
    branches = run(n, grid=grid, per_cell=per_cell)
    expected = cells * per_cell if per_cell else (n if n is not None else cells)
    assert len(branches) == expected
    sizes = [sum(1 for b in branches if b.provenance["cell"] == c) for c in range(cells)]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


# ---------------------------------------------------------------------------
# Jitter
# ---------------------------------------------------------------------------


def test_jitter_is_seeded_and_bounded() -> None:
    first = values(run(8, jitter="temperature=1.0±0.2", seed=42), "temperature")
    again = values(run(8, jitter="temperature=1.0+-0.2", seed=42), "temperature")
    other = values(run(8, jitter="temperature=1.0±0.2", seed=43), "temperature")
    assert first == again and first != other
    assert all(0.8 <= v <= 1.2 for v in first + other)
    assert len(set(first)) == 8
    assert all(round(v, 4) == v for v in first)


def test_jitter_clamps_to_the_valid_range() -> None:
    got = values(run(30, jitter="top_p=0.95±0.2"), "top_p")
    assert all(0.75 <= v <= 1.0 for v in got) and max(got) == 1.0
    ints = values(run(10, jitter="top_k=40±10"), "top_k")
    assert all(isinstance(v, int) and 30 <= v <= 50 for v in ints)


def test_relative_jitter_centres_on_the_value_in_effect() -> None:
    got = values(run(6, jitter="temperature=±0.1"), "temperature")  # A sets 0.9
    assert all(0.8 <= v <= 1.0 for v in got)
    swept = run(3, sweep="temperature=0.6:1.4", jitter="temperature=±0.01")
    for value, centre in zip(values(swept, "temperature"), [0.6, 1.0, 1.4], strict=True):
        assert abs(value - centre) <= 0.01
    assert swept[0].provenance["sources"]["temperature"] == "jitter"
    neutral = values(run(4, B, jitter="top_p=±0.05"), "top_p")  # nothing set: the neutral 1.0
    assert all(0.95 <= v <= 1.0 for v in neutral)
    with pytest.raises(UsageError, match="mirostat_tau has no value to jitter around"):
        run(2, jitter="mirostat_tau=±1")


def test_jitter_draws_are_independent_per_parameter() -> None:
    """Adding a jitter on another parameter does not change this one's draws."""
    alone = values(run(5, jitter="temperature=1±0.3", seed=9), "temperature")
    paired = values(run(5, jitter="temperature=1±0.3 top_p=0.9±0.05", seed=9), "temperature")
    assert alone == paired


def test_a_missing_seed_is_drawn_recorded_and_replayable() -> None:
    branches = run(4, jitter="temperature=1±0.3", seed=None)
    seed = branches[0].provenance["rng_seed"]
    assert isinstance(seed, int) and all(b.provenance["rng_seed"] == seed for b in branches)
    replay = run(4, jitter="temperature=1±0.3", seed=seed)
    assert values(replay, "temperature") == values(branches, "temperature")


@given(
    center=st.floats(0, 5),
    spread=st.floats(0, 3),
    seed=st.integers(0, 2**32),
)
@settings(max_examples=60, deadline=None)
def test_jitter_stays_within_the_clamp_bounds(center: float, spread: float, seed: int) -> None:
    jitter = Jitter("temperature", spread, center)
    value = jitter.draw(center, random.Random(seed))
    assert max(0.0, center - spread) - 1e-9 <= value <= min(5.0, center + spread) + 1e-9
    assert 0 <= value <= 5


# ---------------------------------------------------------------------------
# Mix
# ---------------------------------------------------------------------------


def test_mix_counts_models_and_presets() -> None:
    branches = run(None, A, B, mix="2@a:creative,3@b")
    assert [b.model.name for b in branches] == ["a", "a", "b", "b", "b"]
    assert branches[0].params["min_p"] == 0.07 and branches[0].provenance["presets"] == ["creative"]
    assert branches[0].provenance["sources"]["min_p"] == "preset:creative"
    assert "min_p" not in branches[2].params
    assert branches[2].provenance["mix"] == "3@b" and branches[2].provenance["modulators"] == [
        "mix"
    ]
    # Children of one entry stay identical in what is sent, so they share a request.
    assert len({b.group_key() for b in branches}) == 2


def test_mix_splits_n_evenly_with_the_remainder_first() -> None:
    assert [b.model.name for b in run(5, A, B, mix="a,b")] == ["a"] * 3 + ["b"] * 2
    assert [b.model.name for b in run(6, A, B, mix="1@a,b,a")] == ["a", "b", "b", "b", "a", "a"]
    assert [b.model.name for b in run(None, A, B, mix="a,b")] == ["a", "b"]
    assert len(run(99, A, B, mix="2@a,3@b")) == 5  # every entry counted: n is not used
    with pytest.raises(UsageError, match="n=3 leaves 1 children for 2 --mix entries"):
        run(3, A, B, mix="2@a,b,b")


def test_mix_of_presets_uses_the_first_model() -> None:
    branches = run(4, A, B, mix="creative,precise+single-line")
    assert {b.model.name for b in branches} == {"a"}
    assert values(branches, "temperature") == [1.1, 1.1, 0.5, 0.5]
    assert branches[2].params["stop"] == ["\n"]
    assert branches[2].provenance["presets"] == ["precise", "single-line"]
    base = run(1, A, B, mix=":creative")
    assert base[0].model.name == "a" and base[0].params["temperature"] == 1.1


def test_mix_model_names_may_contain_colons() -> None:
    chat = ModelConfig("openai-chat:gpt-4o", "openai-chat", "gpt-4o")

    def lookup(name: str) -> ModelConfig:
        if name == chat.name:
            return chat
        raise ConfigError(f"unknown model {name!r}")

    branches = plan(
        None,
        [A],
        None,
        specs(mix="openai-chat:gpt-4o:creative,openai-chat:gpt-4o"),
        presets=BOOK,
        model_lookup=lookup,
    )
    assert [b.model.name for b in branches] == [chat.name, chat.name]
    assert (
        branches[0].provenance["presets"] == ["creative"]
        and "presets" not in branches[1].provenance
    )
    with pytest.raises(
        UsageError, match="bad --mix 'nobody': 'nobody' names no known model or preset"
    ):
        plan(None, [A], None, specs(mix="nobody"), presets=BOOK, model_lookup=lookup)


def test_mix_presets_sit_in_the_preset_slot() -> None:
    """A mix entry's preset comes after -p presets and under the document and flags."""
    inputs = LayerInputs(presets=("precise",), document={"min_p": 0.02}, flags={"max_tokens": 9})
    (child,) = run(None, inputs=inputs, mix="creative")
    assert child.params["temperature"] == 1.1  # creative over precise
    assert child.params["min_p"] == 0.02 and child.provenance["sources"]["min_p"] == "document"
    assert child.params["max_tokens"] == 9
    assert child.provenance["presets"] == ["precise", "creative"]


# ---------------------------------------------------------------------------
# Schedule
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "expected"), [(0, 1.2), (2, 1.075), (4, 0.95), (8, 0.7), (30, 0.7)]
)
def test_schedule_follows_depth(depth: int, expected: float) -> None:
    (child,) = run(1, schedule="temperature=1.2->0.7@8", inputs=LayerInputs(depth=depth))
    assert child.params["temperature"] == expected
    assert child.provenance["depth"] == depth
    assert child.provenance["sources"]["temperature"] == "schedule"


def test_schedule_with_a_start_depth() -> None:
    schedule = parse_schedule("temperature=1.2->0.7@4:12")[0]
    assert [schedule.value(d) for d in (0, 4, 8, 12, 40)] == [1.2, 1.2, 0.95, 0.7, 0.7]
    assert parse_schedule("top_k=100->20@4")[0].value(1) == 80


def test_schedule_uses_the_depth_of_the_node_in_the_document() -> None:
    doc = Document.new()
    node = ops.add_child(doc, None, "root").id
    for i in range(4):
        node = ops.add_child(doc, node, f" {i}").id
    set_sticky(doc, node, {"top_p": 0.9})
    inputs = LayerInputs.from_doc(doc, node)
    (child,) = plan(1, [A], inputs, specs(schedule="temperature=1.2->0.4@8"), presets=BOOK)
    assert child.params["temperature"] == 0.8 and child.params["top_p"] == 0.9
    assert child.provenance["sources"]["top_p"] == f"sticky:{node}"


# ---------------------------------------------------------------------------
# Random preset
# ---------------------------------------------------------------------------


def test_random_preset_deals_every_preset_before_repeating() -> None:
    pool = BOOK.random_pool()
    branches = run(len(pool) * 2, random_preset=True, seed=5)
    drawn = [b.provenance["random_preset"] for b in branches]
    assert sorted(drawn[: len(pool)]) == sorted(pool) and sorted(drawn[len(pool) :]) == sorted(pool)
    for b in branches:
        name = b.provenance["random_preset"]
        assert b.provenance["presets"] == [name]
        for key, value in BOOK.params(name).items():
            assert b.params.get(key) == value
        assert b.provenance["modulators"] == ["random-preset"] and b.provenance["rng_seed"] == 5


def test_random_preset_is_seeded_and_skips_presets_in_effect() -> None:
    first = [b.provenance["random_preset"] for b in run(4, random_preset=True, seed=1)]
    assert first == [b.provenance["random_preset"] for b in run(4, random_preset=True, seed=1)]
    others = {
        tuple(b.provenance["random_preset"] for b in run(4, random_preset=True, seed=s))
        for s in range(2, 8)
    }
    assert len(others | {tuple(first)}) > 1
    inputs = LayerInputs(presets=("creative",))
    drawn = {b.provenance["random_preset"] for b in run(40, random_preset=True, inputs=inputs)}
    assert "creative" not in drawn
    with pytest.raises(InvalidOperation, match="no presets left to draw"):
        plan(2, [A], None, specs(random_preset=True), presets=PresetBook({}, {}))


# ---------------------------------------------------------------------------
# Prompt-side variety and capabilities
# ---------------------------------------------------------------------------


def test_needs_prompt_side_variety() -> None:
    assert not needs_prompt_side_variety(None)
    assert not needs_prompt_side_variety(ModelCaps())
    assert needs_prompt_side_variety(ModelCaps(temperature=False))
    assert needs_prompt_side_variety(ModelCaps(temperature=1.0))


def test_fixed_sampling_models_get_a_seed_phrase_per_child() -> None:
    caps = {"a": ModelCaps(temperature=1.0), "b": ModelCaps(recommended={"top_p": 0.95})}
    branches = plan(
        3, [A, B], None, None, rng_seed=11, presets=BOOK, caps_lookup=lambda m: caps[m.name]
    )
    phrases = [b.provenance.get("seed_phrase") for b in branches]
    assert phrases[:3] == [seed_phrase(11, i) for i in range(3)] and len(set(phrases[:3])) == 3
    assert phrases[3:] == [None] * 3
    assert branches[0].provenance["rng_seed"] == 11 and branches[0].provenance["index"] == 0
    assert all(
        b.params == branches[0].params for b in branches[:3]
    )  # variety is in the prompt only
    assert branches[3].params["top_p"] == 0.95  # recommended values join the model layer
    assert branches[3].provenance["sources"]["top_p"] == "model"
    (single,) = plan(
        1, [A], None, None, rng_seed=11, presets=BOOK, caps_lookup=lambda m: caps[m.name]
    )
    assert "seed_phrase" not in single.provenance  # one child needs no variety


def test_same_seed_same_plan() -> None:
    flags: dict[str, Any] = {
        "sweep": "min_p=0:0.1",
        "jitter": "temperature=1±0.2",
        "random_preset": True,
        "grid": "top_k=0,40",
    }
    one = run(6, A, B, seed=3, **dict(flags))
    two = run(6, A, B, seed=3, **dict(flags))
    assert one == two
    assert one != run(6, A, B, seed=4, **dict(flags))
