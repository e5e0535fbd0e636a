"""What pyproject.toml promises a fresh install: every runtime import has its dependency."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from importlib import metadata

import pytest

from conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _names(requirements: list[str]) -> set[str]:
    return {
        re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements
    }


def test_html_ingest_dependencies_are_declared() -> None:
    """trafilatura imports lxml.html.clean; pip 23 installs no lxml extra for it (exit 70)."""
    declared = _names(PROJECT["project"]["dependencies"])
    assert {"trafilatura", "lxml-html-clean"} <= declared
    installed = _names(metadata.requires("loom-weave") or [])
    assert "lxml-html-clean" in installed  # the installed metadata says the same


def test_license_is_an_spdx_string_setuptools_accepts_without_warning() -> None:
    assert PROJECT["project"]["license"] == "MIT"
    setuptools = next(r for r in PROJECT["build-system"]["requires"] if r.startswith("setuptools"))
    assert int(setuptools.split(">=")[1].split(".")[0]) >= 77  # the first to take SPDX strings


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(),
    reason="needs git and a git checkout of loom",
)
def test_document_sidecars_are_ignored_by_git() -> None:
    """The quick start run in a checkout left backups and locks as untracked files."""
    sidecars = [
        ".story.loom.json.lock",
        ".story.loom.json.bak1",
        ".story.loom.json.bak3",
        ".story.loom.json.tmp-4242-123456789",
        "examples/.story.loom.json.bak2",
    ]
    for name in sidecars:
        checked = subprocess.run(
            ["git", "check-ignore", "--no-index", "-q", name], cwd=ROOT, check=False
        )
        assert checked.returncode == 0, name


def test_the_server_extras_declare_what_they_import() -> None:
    """`loom serve` runs on uvicorn and `loom mcp` on the official SDK; make test installs both."""
    extras = PROJECT["project"]["optional-dependencies"]
    assert "uvicorn" in _names(extras["serve"])
    assert "mcp" in _names(extras["mcp"])
    assert "openai" in _names(extras["test"])  # `loom serve` is tested with the official client
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "serve" in makefile and "mcp" in makefile.split("TEST_STAMP):", 1)[1].split("\n\n")[0]
