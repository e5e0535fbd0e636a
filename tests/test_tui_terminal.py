"""`loom tui` as a person runs it: a real terminal (tmux), keys typed, the screen read back.

Also the command's one-line errors when it cannot start.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Loom

pytest.importorskip("textual", reason="the [tui] extra is not installed")


def test_tui_without_a_terminal_is_a_usage_error(loom: Loom) -> None:
    loom.ok("new", "s.loom.json", "--text", "root")
    result = loom("tui")
    assert result.code == 2
    assert (
        result.stderr
        == "loom: error: loom tui needs a terminal (standard input and output are not one)\n"
    )


def test_tui_on_a_missing_file_is_one_line(loom: Loom) -> None:
    result = loom("tui", "nope.loom.json")
    assert result.code == 1
    assert result.stderr.startswith("loom: error: nope.loom.json: no such file")
    assert len(result.stderr.splitlines()) == 1


class Tmux:
    """One tmux server of our own (its own socket), one 80×24 window running a shell."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.socket = f"loom-test-{uuid.uuid4().hex[:8]}"
        self.cwd = cwd
        self.env = env

    def run(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            check=True,
            env=self.env,
            timeout=30,
        ).stdout

    def start(self) -> None:
        self.run(
            "-f", "/dev/null", "new-session", "-d", "-s", "t", "-x", "80", "-y", "24",
            "-c", str(self.cwd), "bash --norc --noprofile",
        )  # fmt: skip

    def type(self, text: str) -> None:
        self.run("send-keys", "-t", "t", "-l", text)

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "t", *keys)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "t")

    def value(self, fmt: str) -> str:
        return self.run("display-message", "-p", "-t", "t", fmt).strip()

    def wait(self, condition: Callable[[str], bool], seconds: float = 20.0) -> str:
        deadline = time.monotonic() + seconds
        screen = self.screen()
        while time.monotonic() < deadline:
            if condition(screen):
                return screen
            time.sleep(0.1)
            screen = self.screen()
        raise AssertionError(f"the screen never showed what was expected:\n{screen}")

    def kill(self) -> None:
        subprocess.run(
            ["tmux", "-L", self.socket, "kill-server"], capture_output=True, env=self.env
        )


@pytest.fixture
def tmux(loom: Loom) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (`make test` installs Debian's tmux when it can)")
    env = {**os.environ, "TERM": "xterm-256color", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    session = Tmux(loom.cwd, env)
    session.start()
    try:
        yield session
    finally:
        session.kill()


def test_tui_in_a_real_terminal(loom: Loom, tmux: Tmux) -> None:
    """Open, read the text, move, edit in $EDITOR (the app suspends and comes back),
    quit with q: the shell's screen is back and every change is in the file."""
    loom.ok("new", "s.loom.json", "--text", "The lighthouse keeper woke to find the sea gone.")
    first = loom.ok("add", " He walked down to the sand.").stdout.strip()
    loom.ok("add", " The gulls were silent.", "--stay")
    editor = loom.cwd / "editor.sh"
    editor.write_text('#!/bin/sh\nprintf " Edited in the editor." >> "$1"\n')
    editor.chmod(0o755)
    python = shlex.quote(sys.executable)
    tmux.type(
        f"EDITOR={shlex.quote(str(editor))} {python} -m loom tui -f s.loom.json; echo TUI-EXITED-$?"
    )
    tmux.keys("Enter")
    screen = tmux.wait(lambda s: "s.loom.json · " in s and "depth 1" in s and "to the sand." in s)
    assert "The lighthouse keeper woke to find the sea" in screen
    assert "gone.▏ He walked down to the sand." in screen  # the node boundary, marked
    assert "1  ✎  The gulls were silent." in screen
    assert tmux.value("#{alternate_on}") == "1"
    tmux.keys("l")  # to the child
    tmux.wait(lambda s: "depth 2" in s)
    tmux.keys("E")  # suspends, runs the editor, comes back
    screen = tmux.wait(lambda s: "Edited in the editor." in s and "depth 2" in s)
    tmux.keys("q")
    screen = tmux.wait(lambda s: "TUI-EXITED-0" in s)
    assert "depth 2" not in screen  # the TUI's screen is gone: the terminal is restored
    assert tmux.value("#{alternate_on}") == "0"
    assert tmux.value("#{cursor_flag}") == "1"  # and the cursor shows again
    shown = loom.ok("show", "--raw").stdout
    assert shown.endswith(" The gulls were silent. Edited in the editor.")
    assert loom.ok("show", "--json").json()["node"]["parent"] == first


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
def test_a_dropped_connection_saves_what_was_queued(
    loom: Loom, tmux: Tmux, signum: signal.Signals
) -> None:
    """SIGHUP (the SSH connection or the terminal went away) or SIGTERM (`kill`) right after
    a move: the move is saved before the TUI exits, and the terminal is restored. SIGTERM
    used to end it at once: the move was lost and the screen left in the TUI's mode."""
    loom.ok("new", "s.loom.json", "--text", "The lighthouse keeper woke.")
    child = loom.ok("add", " He walked down to the sand.", "--stay").stdout.strip()
    python = shlex.quote(sys.executable)
    tmux.type(f"{python} -m loom tui -f s.loom.json; echo TUI-EXITED-$?")
    tmux.keys("Enter")
    tmux.wait(lambda s: "depth 0" in s and "He walked down" in s)
    shell = tmux.value("#{pane_pid}")
    tui = subprocess.run(
        ["pgrep", "-P", shell], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    tmux.keys("l")
    tmux.wait(lambda s: "depth 1" in s)
    os.kill(int(tui), signum)  # at once: the save was still waiting for a pause
    tmux.wait(lambda s: f"TUI-EXITED-{128 + signum}" in s)
    assert loom.ok("show", "--json").json()["node"]["id"] == child
    assert tmux.value("#{alternate_on}") == "0"
