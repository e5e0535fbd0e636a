"""Fast start: navigation commands import only what they need."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import Loom

HEAVY = (
    "httpx2",
    "httpx",
    "asyncio",
    "ssl",
    "textual",
    "xllamacpp",
    "anthropic",
    "openai",
    "trafilatura",
    "pypdf",
    "sqlite3",
    # The servers' stacks (`loom serve`, `loom mcp`) and loom's modules over them.
    "uvicorn",
    "starlette",
    "mcp",
    "loom.serve",
    "loom.mcp",
    # Generation's machinery. The provider registry (loom.generation.backends) and the
    # request value are light on purpose: `loom --help` lists `gen`'s choices from them.
    "loom.generation.core",
    "loom.generation.engine",
    "loom.generation.plan",
    "loom.generation.backends.http",
    "loom.generation.backends.openai_compat",
    "loom.generation.backends.anthropic",
    "loom.generation.backends.embedded",
    "loom.sampling",
    "loom.emulation",
)

PROBE = """
import json, sys, runpy
args, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["loom", *args]
code = 0
try:
    runpy.run_module("loom", run_name="__main__")
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
found = sorted(m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in heavy))
print(json.dumps({"code": code, "imported": found}), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["show"],
        ["tree"],
        ["ls"],
        ["goto", "@"],
        ["add", "x"],
        ["search", "x"],
        ["info"],
        ["undo"],
        ["--help"],
        ["tui", "--help"],
        ["serve", "--help"],
        ["mcp", "--help"],
    ],
)
def test_navigation_does_not_import_heavy_modules(loom: Loom, args: list[str]) -> None:
    loom.ok("new", "s.loom.json", "--text", "a root to search for x")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)],
        cwd=loom.cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    probe = json.loads(proc.stderr.strip().splitlines()[-1])
    # A command that failed early would import little and pass for the wrong reason.
    assert probe["code"] == 0, f"`loom {' '.join(args)}` failed: {proc.stderr}"
    assert probe["imported"] == [], f"`loom {' '.join(args)}` imported {probe['imported']}"


def test_the_light_generation_modules_stay_light() -> None:
    """What `loom --help` and config load from generation must not pull in its machinery."""
    script = (
        "import json, sys\n"
        "import loom.generation.backends, loom.generation.request, loom.generation.context\n"
        "import loom.config\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert json.loads(proc.stdout) == []
