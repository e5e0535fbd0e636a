"""Bytes of `--json` answers per common command: every field, the defaults, and ids + text.

The document is the issue's shape: a prompt with three generated children, then a branch
grown to 16 nodes, every generated node carrying a generation record and token
probabilities (5 alternatives per token) as a real generation records them. Each command
is run as a real process three ways in the same run: `--fields all` (every node with its
whole `meta`, as every answer was before lists became brief), the default, and
`--fields id,text`. Ratios are to `--fields all`.

    python bench/bench_json.py
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from loom import ops, store  # noqa: E402
from loom.document import Document  # noqa: E402

WORDS = ("sea", "went", "out", "and", "did", "not", "come", "back", "for", "a", "long", "time")


def generated_meta(rng: random.Random, tokens: list[str]) -> dict[str, object]:
    """A generation record and token probabilities shaped as the embedded backend writes them."""
    top = [
        [[token, round(-rng.uniform(0.05, 3), 4)]]
        + [[rng.choice(WORDS), round(-rng.uniform(2, 6), 4)] for _ in range(4)]
        for token in tokens
    ]
    return {
        "gen": {
            "backend": "embedded",
            "base_url": "",
            "model": "embedded",
            "model_id": "gemma-3-270m",
            "reported_model": "gemma-3-270m-q4_k_m",
            "params": {"max_tokens": len(tokens), "logprobs": 5},
            "sent": {"n_predict": len(tokens), "n_probs": 5},
            "sampler": {
                "values": {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05},
                "defaults_from": "embedded",
            },
            "prompt": {"sha256": "262bc2be8126def6", "chars": 48},
            "finish_reason": "length",
            "usage": {"prompt_tokens": 9, "completion_tokens": len(tokens), "total_tokens": 33},
            "latency_ms": 1532,
            "ttft_ms": 412,
            "request": {"n": 3, "index": 0},
            "emulation": {"method": "completion", "framing": "1"},
        },
        "logprobs": {
            "source": "pre-sampling",
            "tokens": tokens,
            "lp": [round(-rng.uniform(0.01, 4), 4) for _ in tokens],
            "top": top,
        },
    }


def add_generated(doc: Document, parent: str, rng: random.Random) -> str:
    tokens = [" " + rng.choice(WORDS) for _ in range(24)]
    node = ops.add_child(doc, parent, "".join(tokens), kind="model", move_cursor=False)
    doc.nodes[node.id]["meta"] = generated_meta(rng, tokens)
    return node.id


def build(path: Path) -> dict[str, str]:
    rng = random.Random(7)
    doc = Document.new(title="bench json")
    root = ops.add_child(doc, None, "The lighthouse keeper").id
    prompt = ops.add_child(doc, root, " climbed the stairs and saw").id
    children = [add_generated(doc, prompt, rng) for _ in range(3)]
    tip = children[0]
    while len(doc) < 16:
        tip = add_generated(doc, tip, rng)
    ops.goto(doc, tip)
    store.create(path, doc)
    return {"prompt": prompt, "child": children[0], "tip": tip}


def size(cwd: Path, *args: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-m", "loom", *args, "-f", "b.loom.json"],
        cwd=cwd,
        capture_output=True,
        check=True,
        env={**os.environ, "LOOM_HOME": str(cwd / "home")},
    )
    return len(proc.stdout)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        ids = build(cwd / "b.loom.json")
        commands = {
            "show (a generated node)": ["show", ids["child"]],
            "ls (3 generated children)": ["ls", ids["prompt"]],
            "tree (16 nodes)": ["tree"],
            "search (14 hits)": ["search", "e"],
            "info NODE": ["info", ids["child"]],
            "log": ["log"],
        }
        print(
            f"{'command':<28} {'all fields':>11} {'default':>9} {'ratio':>6} {'id,text':>8} {'ratio':>6}"
        )
        for label, args in commands.items():
            full = size(cwd, *args, "--fields", "all")
            default = size(cwd, *args, "--json")
            minimal = size(cwd, *args, "--fields", "id,text")
            print(
                f"{label:<28} {full:>11,} {default:>9,} {default / full:>6.2f} "
                f"{minimal:>8,} {minimal / full:>6.2f}"
            )


if __name__ == "__main__":
    main()
