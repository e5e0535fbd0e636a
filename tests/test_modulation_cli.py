"""Modulation and parameters from the command line, checked against what the server received."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from loom.errors import InvalidOperation

from conftest import Loom
from fakeprovider import FakeProvider


@pytest.fixture
def doc(loom: Loom, fake_provider: FakeProvider) -> Loom:
    loom.ok("new", "m.loom.json", "--text", "Once upon a time")
    for name in ("a", "b"):
        loom.ok(
            "models",
            "add",
            name,
            "--provider",
            "openai",
            "--base-url",
            fake_provider.openai_url,
            "--model",
            f"model-{name}",
            "--kind",
            "base",
        )
    loom.ok("models", "default", "a")
    return loom


def sent(fake: FakeProvider, key: str) -> list[object]:
    """The value of `key` in every request body, one entry per child (n expanded)."""
    values: list[object] = []
    for r in fake.requests:
        values += [r.body.get(key)] * int(r.body.get("n", 1))
    return values


def test_sweep_spreads_temperatures_and_records_them(
    doc: Loom, fake_provider: FakeProvider
) -> None:
    made = doc.ok("gen", "-n", "5", "--sweep", "temperature=0.6:1.4", "--fields", "all").json()[
        "nodes"
    ]
    assert sorted(sent(fake_provider, "temperature")) == [0.6, 0.8, 1.0, 1.2, 1.4]  # type: ignore[type-var]
    records = [n["meta"]["gen"] for n in made]
    assert [r["params"]["temperature"] for r in records] == [0.6, 0.8, 1.0, 1.2, 1.4]
    assert all(r["modulation"]["modulators"] == ["sweep"] for r in records)
    assert [r["modulation"]["index"] for r in records] == [0, 1, 2, 3, 4]


def test_identical_children_share_one_request(doc: Loom, fake_provider: FakeProvider) -> None:
    doc.ok("gen", "-n", "4", "-t", "0.9", "--fields", "all")
    assert len(fake_provider.requests) == 1 and fake_provider.requests[0].body["n"] == 4


def test_grid_per_cell_and_mix_across_models(doc: Loom, fake_provider: FakeProvider) -> None:
    made = doc.ok(
        "gen",
        "--grid",
        "temperature=0.8,1.2",
        "--grid",
        "top_p=0.9,1.0",
        "--per-cell",
        "2",
        "--fields",
        "all",
    ).json()["nodes"]
    cells = sorted(
        (n["meta"]["gen"]["params"]["temperature"], n["meta"]["gen"]["params"]["top_p"])
        for n in made
    )
    assert cells == sorted([(t, p) for t in (0.8, 1.2) for p in (0.9, 1.0)] * 2)
    fake_provider.clear()
    made = doc.ok("gen", "--mix", "2@a,1@b:precise", "--fields", "all").json()["nodes"]
    assert [n["meta"]["gen"]["model"] for n in made] == ["a", "a", "b"]
    models = sorted(r.body["model"] for r in fake_provider.requests)
    assert models == ["model-a", "model-b"]
    assert made[2]["meta"]["gen"]["params"]["temperature"] == 0.5  # the `precise` preset


def test_jitter_is_deterministic_given_the_seed(doc: Loom, fake_provider: FakeProvider) -> None:
    first = doc.ok(
        "gen", "-n", "3", "--jitter", "temperature=1.0±0.2", "--rng-seed", "7", "--fields", "all"
    ).json()["nodes"]
    second = doc.ok(
        "gen", "-n", "3", "--jitter", "temperature=1.0±0.2", "--rng-seed", "7", "--fields", "all"
    ).json()["nodes"]
    temps = [n["meta"]["gen"]["params"]["temperature"] for n in first]
    assert temps == [n["meta"]["gen"]["params"]["temperature"] for n in second]
    assert all(0.8 <= t <= 1.2 for t in temps) and len(set(temps)) == 3


def test_layers_presets_sticky_and_flags(doc: Loom, fake_provider: FakeProvider) -> None:
    doc.ok("params", "--set", "temperature=0.3", "--set", "top_p=0.5")
    explain = {
        r["param"]: r
        for r in doc.ok("params", "--explain", "-p", "creative", "--json").json()["explain"]
    }
    assert explain["temperature"]["value"] == 0.3 and explain["temperature"]["layer"].startswith(
        "sticky:"
    )
    assert explain["min_p"]["layer"] == "preset:creative"
    child = doc.ok("add", " there was").stdout.strip()
    doc.ok("gen", "-n", "1", "-p", "creative", "--top-p", "0.8", "--fields", "all")
    body = fake_provider.requests[-1].body
    assert (
        body["temperature"] == 0.3 and body["top_p"] == 0.8
    )  # sticky beats presets; flags beat sticky
    node = doc.ok("ls", child, "--fields", "all").json()["nodes"][0]
    sources = node["meta"]["gen"]["modulation"]["sources"]
    assert sources["top_p"] == "flags" and sources["temperature"].startswith("sticky:")


def test_regen_reuses_recorded_parameters(doc: Loom, fake_provider: FakeProvider) -> None:
    [first] = doc.ok("gen", "-n", "1", "-t", "0.7", "--seed", "11", "--fields", "all").json()[
        "nodes"
    ]
    fake_provider.clear()
    [again] = doc.ok("regen", first["id"], "--fields", "all").json()["nodes"]
    assert again["parent"] == first["parent"]
    body = fake_provider.requests[0].body
    assert body["temperature"] == 0.7 and body["seed"] == 11
    fake_provider.clear()
    doc.ok("regen", first["id"], "-t", "1.3")
    assert fake_provider.requests[0].body["temperature"] == 1.3
    shown = doc.ok("params", first["id"], "--json").json()["generation"]
    assert shown["params"]["temperature"] == 0.7 and shown["model"] == "a"


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("params", "x", "params and extra must be objects"),
        ("extra", "abc", "params and extra must be objects"),
        ("emulation", "x", "emulation an object"),
        ("model", 5, "model must be a name"),
        ("params", {"temperature": "hot"}, "temperature must be a number"),
        ("emulation", {"method": "telepathy"}, "unknown emulation method"),
        ("mode", 7, "unknown mode"),
    ],
)
def test_regen_of_a_damaged_record_is_one_line(
    doc: Loom, fake_provider: FakeProvider, field: str, value: Any, said: str
) -> None:
    """A hand-edited meta.gen crashed regen (exit 70), or sent temperature "hot" as recorded."""
    import json

    [first] = doc.ok("gen", "-n", "1", "--json").json()["nodes"]
    path = doc.cwd / "m.loom.json"
    data = json.loads(path.read_text())
    data["nodes"][first["id"]]["meta"]["gen"][field] = value
    path.write_text(json.dumps(data))
    fake_provider.clear()
    result = doc("regen", first["id"])
    assert result.code == 1, result.stderr
    assert f"node {first['id']}'s generation record is damaged: " in result.stderr
    assert said in result.stderr and result.stderr.count("\n") == 1
    assert fake_provider.requests == []


def test_strict_refuses_dropped_parameters_and_default_warns(
    doc: Loom, fake_provider: FakeProvider
) -> None:
    doc.ok(
        "models",
        "add",
        "claude",
        "--provider",
        "anthropic",
        "--base-url",
        fake_provider.anthropic_url,
        "--model",
        "claude-sonnet-4-5",
        "--key-env",
        "FAKE_KEY",
    )
    strict = doc("gen", "-m", "claude", "-n", "1", "--seed", "3", "--strict", env={"FAKE_KEY": "k"})
    assert strict.code == 1 and "--strict" in strict.stderr and "seed" in strict.stderr
    assert fake_provider.requests == []
    loose = doc("gen", "-m", "claude", "-n", "1", "--seed", "3", env={"FAKE_KEY": "k"})
    assert loose.code == 0 and "warning: claude: seed not sent" in loose.stderr


def test_bad_modulation_specs_are_one_line(doc: Loom) -> None:
    for args in (
        ["--sweep", "temperature=abc"],
        ["--grid", "nope=1,2"],
        ["--jitter", "temperature=1"],
        ["--mix", "0@a"],
    ):
        result = doc("gen", *args)
        assert (
            result.code in (1, 2)
            and result.stderr.count("\n") == 1
            and "Traceback" not in result.stderr
        ), args


def test_user_presets_file_is_used(doc: Loom, fake_provider: FakeProvider) -> None:
    presets = Path(os.environ["LOOM_HOME"]) / "presets.toml"
    presets.write_text('[mine]\ndescription = "mine"\ntemperature = 0.42\n')
    assert "mine" in {p["name"] for p in doc.ok("presets", "--json").json()["presets"]}
    doc.ok("gen", "-n", "1", "-p", "mine")
    assert fake_provider.requests[-1].body["temperature"] == 0.42


def test_regenerate_in_the_library(doc: Loom, fake_provider: FakeProvider) -> None:
    from loom import GenerationRequest, generate

    def regenerate(path: Path, node: str, **fields: Any) -> Any:
        return generate(path, GenerationRequest(regenerate=node, **fields))

    path = doc.cwd / "m.loom.json"
    made = doc.ok(
        "gen", "-n", "1", "-t", "0.7", "--param", "openai.user=abc", "--fields", "all"
    ).json()
    [first] = made["nodes"]
    fake_provider.clear()
    result = regenerate(path, first["id"][:6], n=2, params={"top_p": "0.5"}, models=("b",))
    assert [n.parent_id for n in result.nodes] == [first["parent"]] * 2
    body = fake_provider.requests[0].body
    assert (body["model"], body["temperature"], body["top_p"], body["user"], body["n"]) == (
        "model-b",
        0.7,
        0.5,
        "abc",
        2,
    )
    assert result.nodes[0].meta["gen"]["modulation"] == {"regen_of": first["id"]}
    moved = result.nodes[1].id
    doc.ok("mv", moved, "--root")  # generated, but no longer continuing anything
    human = doc.ok("add", " by hand", "--stay").stdout.strip()
    for node, message in ((moved, "is a root"), (human, "was not generated")):
        with pytest.raises(InvalidOperation, match=message):
            regenerate(path, node)
    with pytest.raises(InvalidOperation, match="temperature"):
        regenerate(path, first["id"], params={"temperature": "hot"})


def test_plan_branches_is_the_one_planning_path(doc: Loom, fake_provider: FakeProvider) -> None:
    from loom import GenerationRequest, generate, ops, store
    from loom.generation.plan import capability_table, plan_branches

    path = doc.cwd / "m.loom.json"
    root = store.load(path).root_ids[0]

    def plan(**fields: Any) -> list[Any]:
        request = GenerationRequest(node=root, **fields).checked()
        return plan_branches(store.load(path), root, request, capability_table())

    branches = plan(
        n=3,
        models=["a", "b"],
        params={"temperature": "0.5"},
        modulation={"sweep": "top_p=0.5:0.9"},
        presets=["creative"],
    )
    assert [b.model.name for b in branches] == ["a"] * 3 + ["b"] * 3
    assert [b.params["top_p"] for b in branches] == [0.5, 0.7, 0.9] * 2
    assert {b.params["temperature"] for b in branches} == {0.5}  # flags beat the preset
    assert {b.params["min_p"] for b in branches} == {0.07}
    # Not told how many: the document's `n`, for the CLI and the library alike.
    with store.editing(path) as edited:
        ops.set_document_field(edited, "defaults", {"n": 2})
    assert len(plan()) == 2
    assert len(generate(path, GenerationRequest(node=root)).nodes) == 2
    assert len(plan(modulation={"grid": "temperature=0.5,0.7,0.9"})) == 3  # one per cell


@pytest.mark.parametrize("value", ["lots", 0, 2.5, True])
def test_a_bad_document_n_is_a_one_line_error(doc: Loom, value: object) -> None:
    from loom import ops, store

    with store.editing(doc.cwd / "m.loom.json") as edited:
        ops.set_document_field(edited, "defaults", {"n": value})
    result = doc("gen")
    assert result.code == 1 and "defaults.n must be a whole number" in result.stderr
    assert result.stderr.count("\n") == 1
    assert doc("gen", "-n", "1").code == 0  # an explicit -n does not need it
