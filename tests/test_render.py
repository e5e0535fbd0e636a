"""What people see at a terminal: control characters made visible, widths in columns, summaries.

The CLI checks run `loom` with its standard input and output on a pseudo-terminal of a
chosen size, since that is when it renders for people rather than printing exact text.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import Any

import click
import pytest

import loom
from loom import ops
from loom.cli import render
from loom.cli.gen_cmds import LiveView
from loom.document import Document, Node
from loom.generation import events as ev

from conftest import Result

CONTROLS = "\x1b[31m red \x1b]0;pwned\x07 csi\x9b2J del\x7f cr\rback"
WIDE = "海辺の灯台守は誰とも話さなかった 🌊🌊🌊 e\u0301e\u0301 " * 4


def on_terminal(
    cwd: Path,
    *args: str,
    columns: int = 80,
    rows: int = 24,
    env: dict[str, str] | None = None,
    stderr_too: bool = False,
) -> Result:
    """Run `loom ARGS` with stdin and stdout (and stderr, if asked) on a terminal of this size."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    full_env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "loom", *args],
        cwd=cwd,
        stdin=slave,
        stdout=slave,
        stderr=slave if stderr_too else subprocess.PIPE,
        env={**full_env, **(env or {})},
    )
    os.close(slave)
    screen = b""
    with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
        while chunk := os.read(master, 65536):
            screen += chunk
    os.close(master)
    err = b"" if proc.stderr is None else proc.stderr.read()
    if proc.stderr is not None:
        proc.stderr.close()
    code = proc.wait(timeout=60)
    return Result(code, screen.decode().replace("\r\n", "\n"), err.decode())


def lines_of(text: str) -> list[str]:
    return [line for line in text.split("\n") if line]


# ---- control characters --------------------------------------------------------------------


def test_safe_makes_control_characters_visible_and_keeps_lines() -> None:
    assert render.safe("a\x1b[1mb\x07\tc\r\nd\re\x7f\x9b\x00") == "a␛[1mb␇\tc\nd␍e␡\\x9b␀"


def test_preview_is_one_line_with_no_control_characters() -> None:
    shown = render.preview(CONTROLS + "\nnext\tline", 200)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in shown)
    assert "␛[31m red ␛]0;pwned␇ csi\\x9b2J del␡ cr" in shown and "⏎next line" in shown


def test_badges_escape_titles_and_tags() -> None:
    doc = Document.new()
    node = ops.add_child(doc, None, "x")
    ops.set_bookmark(doc, node.id, True, title="t\x1b[2Jitle")
    ops.tag(doc, node.id, add=["a\x07b"])
    shown = render.badges(Node(doc, node.id))
    assert "\x1b" not in shown and "\x07" not in shown and "␛[2J" in shown and "a␇b" in shown


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """A document whose texts, title, tag and note carry terminal control sequences.

    The cursor is on the leaf; its parent is the document's only root.
    """
    path = tmp_path / "h.loom.json"
    loom.new(path)
    with loom.edit(path) as doc:
        root = ops.add_child(doc, None, "Once " + CONTROLS)
        leaf = ops.add_child(doc, root.id, " more " + CONTROLS, kind="model", meta=_generated(3))
        ops.set_bookmark(doc, leaf.id, True, title="mark\x1b[5m")
        ops.tag(doc, leaf.id, add=["t\x1b[7m"])
        ops.set_note(doc, leaf.id, "note\x1b[8m")
        ops.edit(doc, root.id, "Twice " + CONTROLS)  # a sibling version, for `tree`
        ops.edit(doc, leaf.id, " more " + CONTROLS)  # an earlier text, for `history`
        ops.goto(doc, leaf.id)
    data = json.loads(path.read_text())
    data["journal"]["undo"][-1]["summary"] += " \x1b[2J"  # a hand-made file can say anything
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["tree", "--all"],
        ["ls", "ROOT"],
        ["show"],
        ["show", "--segment"],
        ["show", "--probs"],
        ["search", "red"],
        ["bookmark", "--list"],
        ["history"],
        ["history", "--show", "0"],
        ["note"],
        ["info", "@"],
        ["tag", "--list"],
        ["log"],
    ],
)
def test_terminal_output_never_carries_control_characters(hostile: Path, args: list[str]) -> None:
    root = loom_json(hostile.parent, "tree", "--json", "-f", hostile.name)["roots"][0]
    args = [root if a == "ROOT" else a for a in args]
    result = on_terminal(hostile.parent, *args, "-f", hostile.name)
    assert result.code == 0, result.stderr
    # NO_COLOR is set for tests, so loom itself writes no escape sequences either.
    assert not any(c in result.stdout for c in "\x1b\x07\x9b\x7f\r"), repr(result.stdout)
    assert "␛" in result.stdout


def test_piped_and_raw_output_stay_exact(hostile: Path) -> None:
    from conftest import Loom

    run = Loom(hostile.parent)
    expected = "Once " + CONTROLS + " more " + CONTROLS
    assert run.ok("show", "-f", hostile.name).stdout == expected
    assert on_terminal(hostile.parent, "show", "--raw", "-f", hostile.name).stdout == expected
    assert run.ok("show", "--json", "-f", hostile.name).json()["text"] == expected


# ---- display width ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "width"),
    [("abc", 3), ("海辺", 4), ("🌊x", 3), ("e\u0301", 1), ("a\u200db", 2), ("", 0)],
)
def test_text_width_counts_columns(text: str, width: int) -> None:
    assert render.text_width(text) == width


@pytest.mark.parametrize("limit", [1, 2, 5, 9, 10, 31])
def test_previews_are_cut_by_columns(limit: int) -> None:
    shown = render.preview(WIDE, limit)
    assert render.text_width(shown) <= limit
    assert shown.endswith("…")
    assert render.text_width(shown) >= limit - 2  # a wide character may leave one column
    tail = render.clip_left(WIDE, limit)
    assert render.text_width(tail) <= limit and tail.startswith("…")


def test_text_that_fits_is_not_cut() -> None:
    assert render.preview("海辺の灯台", 10) == "海辺の灯台"
    assert render.preview("海辺の灯台", 9) == "海辺の灯…"
    assert render.clip_left("海辺の灯台", 10) == "海辺の灯台"


def test_node_and_tree_lines_fit_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from loom.view import tree_window

    monkeypatch.setattr(render, "width", lambda: 50)
    doc = Document.new()
    root = ops.add_child(doc, None, WIDE)
    for _ in range(3):
        kid = ops.add_child(doc, root.id, WIDE, kind="model", move_cursor=False)
        ops.tag(doc, kid.id, add=["海"])
    line = render.node_line(kid, "abcd", number=3, suffix="temperature=0.8")
    assert render.visible_width(line) < 50 and line.endswith(" #海 temperature=0.8")
    for line in render.tree_lines(doc, tree_window(doc, root.id), root.id):
        assert render.visible_width(line) < 50, line


def test_cli_rows_of_wide_text_fit_the_terminal(tmp_path: Path) -> None:
    path = tmp_path / "w.loom.json"
    loom.new(path)
    with loom.edit(path) as doc:
        root = ops.add_child(doc, None, WIDE)
        for _ in range(3):
            ops.add_child(doc, root.id, WIDE, kind="model", move_cursor=False)
    for args in (["tree"], ["ls"], ["search", "海"], ["history"]):
        result = on_terminal(tmp_path, *args, "-f", path.name, columns=50)
        assert result.code == 0, result.stderr
        for line in lines_of(result.stdout):
            assert render.text_width(line) < 50, (args, line)


# ---- the live generation view ------------------------------------------------------------------


def _finished(index: int, text: str = "", error: str | None = None) -> ev.BranchFinished:
    return ev.BranchFinished(index, text, "stop", error)


class _Screen:
    def __init__(self) -> None:
        self.written = ""

    def write(self, data: str) -> None:
        self.written += data

    def flush(self) -> None:
        pass


@pytest.mark.parametrize(("rows", "total"), [(10, 40), (10, 8), (10, 9), (3, 5), (2, 5)])
def test_live_view_fits_the_screen(monkeypatch: pytest.MonkeyPatch, rows: int, total: int) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("LINES", str(rows))
    screen = _Screen()
    view = LiveView(total, stream=screen)
    for i in range(total):
        view(ev.BranchStarted(i, "m"))
        view(ev.TextDelta(i, WIDE + CONTROLS))
        if i % 2:
            view(_finished(i, WIDE))
    frame = view.frame()
    assert len(frame) == min(total + 1, max(1, rows - 1))
    assert all(render.visible_width(line) < 40 for line in frame), frame
    if total + 1 > rows - 1 and rows > 2:
        assert frame[-1].startswith(f"… {total - (rows - 3)} more")
    # The cursor never moves up further than one frame, and model text cannot steer it.
    assert "\x07" not in screen.written and "\x1b]" not in screen.written
    assert all(int(n) <= max(1, rows - 1) for n in _ups(screen.written))


def _ups(written: str) -> list[str]:
    import re

    return re.findall(r"\x1b\[(\d+)F", written)


def test_live_view_shows_the_end_of_each_branch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "30")
    monkeypatch.setenv("LINES", "24")
    view = LiveView(2, stream=_Screen())
    view(_finished(0, "the start\nand then the very end"))
    view(_finished(1, "", error="refused"))
    frame = view.frame()
    assert frame[1].endswith("the very end") and "…" in frame[1]
    assert frame[2].endswith("[refused]")


# ---- summaries -------------------------------------------------------------------------------------


def _generated(tokens: int) -> dict[str, Any]:
    return {
        "gen": {
            "backend": "openai",
            "model": "base",
            "model_id": "base-1",
            "params": {"temperature": 0.8, "max_tokens": 16},
            "sent": {"temperature": 0.8, "max_tokens": 16},
            "finish_reason": "length",
            "usage": {"prompt_tokens": 5, "completion_tokens": tokens},
            "latency_ms": 812,
            "ttft_ms": 90,
            "emulation": {"method": "completion", "framing": 1},
            "modulation": {"modulators": ["sweep"], "index": 1, "values": {"temperature": 0.8}},
        },
        "logprobs": {
            "source": "post",
            "tokens": ["x"] * tokens,
            "lp": [-0.5] * tokens,
            "top": [[["x", -0.5], ["y", -1.5]]] * tokens,
        },
    }


def test_info_on_a_terminal_summarises_the_generation(tmp_path: Path) -> None:
    path = tmp_path / "g.loom.json"
    loom.new(path)
    with loom.edit(path) as doc:
        root = ops.add_child(doc, None, "Once")
        ops.add_child(doc, root.id, "x" * 300, kind="model", meta=_generated(300))
    result = on_terminal(tmp_path, "info", "@", "-f", path.name)
    assert result.code == 0, result.stderr
    lines = lines_of(result.stdout)
    assert len(lines) < 25
    fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in lines}
    assert fields["model"] == "base (openai base-1)"
    assert fields["finish"] == "length"
    assert fields["usage"] == "prompt_tokens=5, completion_tokens=300"
    assert fields["latency"] == "812 ms (first token after 90 ms)"
    assert fields["sent"] == "temperature=0.8, max_tokens=16"
    assert fields["emulation"] == "completion"
    assert fields["modulation"] == "sweep: temperature=0.8"
    assert fields["logprobs"].startswith("300 tokens (see --json or `loom show ")
    full = loom_json(tmp_path, "info", "@", "--json", "-f", path.name)
    assert len(full["node"]["meta"]["logprobs"]["lp"]) == 300  # --json stays complete


def test_info_on_an_imported_node_shows_only_what_is_known(tmp_path: Path) -> None:
    """A pyloom response records only the model's name: `davinci`, not `davinci (None None)`."""
    path = tmp_path / "i.loom.json"
    loom.new(path)
    with loom.edit(path) as doc:
        ops.add_child(doc, None, "x", kind="model", meta={"gen": {"model": "davinci"}})
    lines = lines_of(on_terminal(tmp_path, "info", "@", "-f", path.name).stdout)
    assert "model: davinci" in [" ".join(line.split()) for line in lines]
    assert not any("None" in line for line in lines)


def loom_json(cwd: Path, *args: str) -> Any:
    from conftest import Loom

    return Loom(cwd).ok(*args).json()


def test_show_probs_ends_with_a_legend_on_a_terminal_only(tmp_path: Path) -> None:
    path = tmp_path / "p.loom.json"
    loom.new(path)
    with loom.edit(path) as doc:
        ops.add_child(doc, None, "xxx", kind="model", meta=_generated(3))
    coloured = on_terminal(tmp_path, "show", "--probs", "-f", path.name, env={"NO_COLOR": ""})
    assert "\x1b[" in coloured.stdout
    assert "token probability: ≥0.8 ≥0.5 ≥0.2 ≥0.05 <0.05" in click.unstyle(coloured.stdout)
    from conftest import Loom

    # Piped: the text with each token's probability in brackets, and nothing else.
    piped = Loom(tmp_path).ok("show", "--probs", "-f", path.name).stdout
    assert piped == "[x 61%][x 61%][x 61%]"
    assert Loom(tmp_path).ok("show", "--probs", "--raw", "-f", path.name).stdout == "xxx"


def test_show_probs_without_colour_writes_brackets(tmp_path: Path) -> None:
    """NO_COLOR on a terminal showed no probabilities at all."""
    path = tmp_path / "p.loom.json"
    loom.new(path)
    with loom.edit(path) as doc:
        ops.add_child(doc, None, "xxx", kind="model", meta=_generated(3))
    shown = lines_of(on_terminal(tmp_path, "show", "--probs", "-f", path.name).stdout)
    assert shown[0] == "[x 61%][x 61%][x 61%]"
    assert shown[1] == "token probability: [token 87%] · plain: not recorded"


def test_show_segment_probs_is_the_segment(tmp_path: Path) -> None:
    path = tmp_path / "p.loom.json"
    loom.new(path)
    with loom.edit(path) as doc:
        root = ops.add_child(doc, None, "A long prompt the model continued")
        meta = _generated(2)
        meta["logprobs"]["lp"] = [-0.01, -5.0]
        ops.add_child(doc, root.id, "xx and typed", kind="model", meta=meta)
    from conftest import Loom

    segment = Loom(tmp_path).ok("show", "--segment", "--probs", "-f", path.name).stdout
    assert segment == "[x 99%][x 0.7%] and typed"  # the typed rest has no probabilities
    on_screen = lines_of(
        on_terminal(tmp_path, "show", "--segment", "--probs", "-f", path.name).stdout
    )
    assert on_screen[0] == "[x 99%][x 0.7%] and typed"
    whole = Loom(tmp_path).ok("show", "--probs", "-f", path.name).stdout
    assert whole == "A long prompt the model continued[x 99%][x 0.7%] and typed"


def test_an_unchanged_edit_says_nothing_changed(tmp_path: Path) -> None:
    path = tmp_path / "e.loom.json"
    loom.new(path)
    with loom.edit(path) as doc:
        node = ops.add_child(doc, None, "Same")
    result = on_terminal(tmp_path, "edit", "--text", "Same", "-f", path.name)
    assert lines_of(result.stdout) == [f"nothing changed: {node.id[:8]} already has this text"]
