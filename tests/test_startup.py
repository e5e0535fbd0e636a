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
    "loom.generate",
)

PROBE = """
import json, sys, runpy
sys.argv = ["loom", *json.loads(sys.argv[1])]
try:
    runpy.run_module("loom", run_name="__main__")
except SystemExit:
    pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {h.split(".")[0] for h in %r} and any(m == h or m.startswith(h + ".") for h in %r))), file=sys.stderr)
""" % (HEAVY, HEAVY)


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
    ],
)
def test_navigation_does_not_import_heavy_modules(loom: Loom, args: list[str]) -> None:
    loom.ok("new", "s.loom.json", "--text", "root")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        cwd=loom.cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    imported = json.loads(proc.stderr.strip().splitlines()[-1])
    assert imported == [], f"`loom {' '.join(args)}` imported {imported}"
