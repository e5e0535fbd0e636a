"""End to end on the real embedded model: `loom gen` writes real text and real logprobs."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from conftest import Loom

pytestmark = pytest.mark.model


def test_gen_on_the_embedded_model_writes_text_and_logprobs(loom: Loom, model_path: Path) -> None:
    models_toml = Path(os.environ["LOOM_HOME"]) / "models.toml"
    models_toml.parent.mkdir(parents=True, exist_ok=True)
    models_toml.write_text(
        f'[models.gemma]\nprovider = "embedded"\nmodel = "gemma-3-270m"\n[models.gemma.options]\nmodel_path = "{model_path}"\n'
    )
    loom.ok("new", "e.loom.json", "--text", "The capital of France is")
    made = loom.ok(
        "gen", "-m", "gemma", "-n", "2", "--max-tokens", "8", "--seed", "1", "--json"
    ).json()
    assert len(made["nodes"]) == 2
    for node in made["nodes"]:
        assert node["text"].strip(), "the model produced no text"
        gen = node["meta"]["gen"]
        assert gen["backend"] == "embedded" and gen["finish_reason"] in ("length", "stop")
        assert gen["usage"]["completion_tokens"] <= 8
        probs = node["meta"]["logprobs"]
        assert probs["source"] == "pre-sampling"
        assert "".join(probs["tokens"]) == node["text"]
        assert all(math.isfinite(lp) and lp <= 0 for lp in probs["lp"])
        assert all(len(alts) == 5 for alts in probs["top"])
    # What was printed is what was saved.
    saved = loom.ok("ls", "--json").json()["children"]
    assert [c["text"] for c in saved] == [n["text"] for n in made["nodes"]]
    # `alts --pick` branches from a real alternative.
    first = made["nodes"][0]
    alt = loom.ok("alts", first["id"], "0", "--pick", "2", "--json").json()["node"]
    assert alt["text"] == first["meta"]["logprobs"]["top"][0][1][0]
