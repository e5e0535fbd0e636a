"""The CLI as a real subprocess on real files: output shapes, exit codes, errors, pipes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import Loom


@pytest.fixture
def story(loom: Loom) -> Loom:
    loom.ok("new", "story.loom.json", "--title", "Tides", "--text", "The sea")
    loom.ok("add", " went out.")
    return loom


def test_new_selects_the_document_for_this_directory(story: Loom) -> None:
    result = story.ok("show")
    assert result.stdout == "The sea went out."  # piped: exactly the text, no newline


def test_add_prints_the_id_and_moves_the_cursor(story: Loom) -> None:
    new_id = story.ok("add", " The tide").stdout.strip()
    assert len(new_id) == 12
    info = story.ok("info", "--json").json()
    assert info["cursor"] == new_id
    assert story.ok("show", "--raw").stdout == "The sea went out. The tide"


def test_add_from_stdin_file_parent_root_sibling_stay(story: Loom, tmp_path: Path) -> None:
    parent = story.ok("info", "--json").json()["cursor"]
    story.ok("add", "-", input=" from stdin\n")
    assert story.ok("show").stdout.endswith(" from stdin")  # echo's newline is not text
    (tmp_path / "seg.txt").write_text(" from a file")
    fid = story.ok("add", "--from-file", "seg.txt", "--parent", parent[:6]).stdout.strip()
    sid = story.ok("add", "--sibling", " a sibling", "--stay").stdout.strip()
    assert story.ok("info", "--json").json()["cursor"] == fid
    assert story.ok("show", sid).stdout == "The sea went out. a sibling"
    rid = story.ok("add", "--root", "Another tree").stdout.strip()
    tree = story.ok("tree", "--json").json()
    assert rid in tree["roots"] and len(tree["roots"]) == 2


def test_json_output_shapes(story: Loom) -> None:
    add = story.ok("add", " more", "--json").json()
    assert add["ok"] is True and add["command"] == "add"
    assert set(add["node"]) >= {
        "id",
        "parent",
        "children",
        "text",
        "kind",
        "tags",
        "bookmark",
        "meta",
    }
    show = story.ok("show", "--json").json()
    assert show["text"] == "The sea went out. more" and len(show["path"]) == 3
    ls = story.ok("ls", show["path"][1], "--json").json()
    assert [c["text"] for c in ls["nodes"]] == [" more"]
    tree = story.ok("tree", "--json").json()
    assert {n["text"] for n in tree["nodes"]} == {"The sea", " went out.", " more"}


def test_navigation_commands(story: Loom) -> None:
    first = story.ok("info", "--json").json()["cursor"]
    alt = story.ok("add", "--sibling", " stayed.").stdout.strip()
    story.ok("up")
    assert story.ok("ls", "--json").json()["nodes"][1]["id"] == alt
    story.ok("down", "1")
    assert story.ok("info", "--json").json()["cursor"] == first
    story.ok("next")
    assert story.ok("info", "--json").json()["cursor"] == alt
    story.ok("prev")
    story.ok("root")
    story.ok("down")  # back along the last-visited branch
    assert story.ok("info", "--json").json()["cursor"] == first
    story.ok("goto", alt[:6])
    assert story.ok("show").stdout == "The sea stayed."


def test_edit_split_merge_mv_rm_restore_undo(story: Loom) -> None:
    leaf = story.ok("info", "--json").json()["cursor"]
    root = story.ok("tree", "--json").json()["roots"][0]
    # Editing the root (which has children) makes a version and keeps the branch.
    result = story.ok("edit", root, "--text", "The lake", "--json").json()
    assert result["new_version"] is True
    assert story.ok("show", leaf).stdout == "The sea went out."
    story.ok("edit", leaf, "--text", " went dry.")
    assert story.ok("show", leaf).stdout == "The sea went dry."
    hist = story.ok("history", leaf, "--json").json()["entries"]
    assert [e["text"] for e in hist] == [" went out.", " went dry."]
    story.ok("history", leaf, "--restore", "0")
    assert story.ok("show", leaf).stdout == "The sea went out."
    tail = story.ok("split", leaf, "--marker", "out", "--json").json()["node"]
    assert tail["text"] == "out."
    assert story.ok("show", tail["id"]).stdout == "The sea went out."
    story.ok("merge", tail["id"])
    assert story.ok("show", leaf).stdout == "The sea went out."
    story.ok("rm", leaf)
    assert story.ok("ls", root, "--json").json()["nodes"] == []
    story.ok("restore", leaf)
    story.ok("mv", leaf, "--root")
    assert story.ok("show", leaf).stdout == " went out."
    story.ok("undo")
    assert story.ok("show", leaf).stdout == "The sea went out."
    story.ok("redo")
    story.ok("undo", "2")
    log = story.ok("log", "--json").json()
    assert len(log["redo"]) == 2


def test_history_restore_takes_the_numbers_history_shows(story: Loom) -> None:
    leaf = story.ok("info", "--json").json()["cursor"]
    story.ok("edit", leaf, "--text", " went dry.")
    entries = story.ok("history", leaf, "--json").json()["entries"]
    assert [(e["index"], e["kind"]) for e in entries] == [(0, "earlier"), (1, "current")]
    steps = len(story.ok("log", "--json").json()["undo"])
    restored = story.ok("history", leaf, "--restore", "1", "--json").json()["node"]
    assert restored["id"] == leaf and restored["text"] == " went dry."
    assert len(story.ok("log", "--json").json()["undo"]) == steps  # nothing to undo
    result = story("history", leaf, "--restore", "2")
    assert result.code == 2 and "no text 2: this node has texts 0..1" in result.stderr
    assert result.stderr.count("\n") == 1


def test_bookmarks_tags_notes_search(story: Loom) -> None:
    story.ok("bookmark", "--title", "low tide")
    story.ok("tag", "draft", "sea")
    story.ok("note", "try colder")
    assert story.ok("note").stdout.strip() == "try colder"
    marks = story.ok("bookmark", "--list", "--json").json()["nodes"]
    assert marks[0]["bookmark"] == {"title": "low tide"}
    assert story.ok("tag", "--list", "--json").json()["tags"].keys() == {"draft", "sea"}
    hits = story.ok("search", "went", "--json").json()["matches"]
    assert len(hits) == 1 and hits[0]["match"] == "went"
    assert story.ok("search", "sea went", "--branch", "--json").json()["matches"]
    miss = story("search", "nothing-like-this")
    assert miss.code == 1 and miss.stdout == ""
    story.ok("root")
    story.ok("next", "--bookmark")
    assert story.ok("show").stdout == "The sea went out."


def test_document_selection_by_flag_and_env(loom: Loom, tmp_path: Path) -> None:
    loom.ok("new", "a.loom.json", "--text", "A")
    loom.ok("new", "b.loom.json", "--text", "B")
    assert loom.ok("show").stdout == "B"  # the last used
    assert loom.ok("show", "-f", "a.loom.json").stdout == "A"
    assert loom.ok("-f", "a.loom.json", "show").stdout == "A"
    assert loom.ok("show", env={"LOOM_FILE": str(tmp_path / "a.loom.json")}).stdout == "A"


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["goto", "zzzzzz"], 1, "no node"),
        (["add"], 2, "missing text"),
        (["add", "x", "--bogus"], 2, "No such option"),
        (["frobnicate"], 2, "No such command"),
        (["split", "--at", "0"], 1, "split offset"),
        (["merge"], 1, "is a root"),
        (["up"], 1, "no parent"),
        (["search", "(", "--regex"], 2, "bad regular expression"),
        (["history", "--show", "9"], 2, "no text 9"),
        (["history", "--restore", "1"], 2, "no text 1: this node has texts 0..0"),
        (["history", "--show", "zzzz"], 2, "no text zzzz: this node has texts 0..0"),
        (["history", "--restore", "-1"], 2, "no text -1"),
        (["tree", "-d", "-1"], 2, "not in the range"),
        (["tree", "--width", "0"], 2, "not in the range"),
        (["log", "-n", "0"], 2, "not in the range"),
        (["mv", "@"], 2, "PARENT or --root"),
        # Bad flag values are usage errors, however deep they are checked.
        (["gen", "--sweep", "temperature=abc"], 2, "bad --sweep 'temperature=abc'"),
        (["gen", "--grid", "temperature=a,b"], 2, "bad --grid"),
        (["gen", "--jitter", "temperature=1±x"], 2, "bad --jitter"),
        (["gen", "--per-cell", "2"], 2, "--per-cell needs a --grid"),
        (["gen", "--param", "temperature=abc"], 2, "bad --param 'temperature=abc'"),
        (["gen", "--param", "bogus=1"], 2, "unknown parameter 'bogus'"),
        (["regen", "@", "--param", "temperature=abc"], 2, "bad --param"),
        (["params", "--set", "temperature=abc"], 2, "bad --set 'temperature=abc'"),
        (["params", "--set", "nokey"], 2, "expected KEY=VALUE"),
        (["params", "--unset", "bogus"], 2, "unknown parameter 'bogus'"),
        (["search", ""], 2, "empty search pattern"),
    ],
)
def test_errors_are_one_line_with_exit_codes(
    loom: Loom, args: list[str], code: int, fragment: str
) -> None:
    loom.ok("new", "e.loom.json", "--text", "root")
    before = (loom.cwd / "e.loom.json").read_bytes()
    result = loom(*args)
    assert result.code == code
    assert fragment in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    as_json = loom(*args, "--json")
    assert as_json.code == code
    error = json.loads(as_json.stdout)  # the answer, on stdout like every answer
    assert error["ok"] is False and fragment in error["error"]["message"]
    assert as_json.stderr == result.stderr  # and the same one line for people
    assert (loom.cwd / "e.loom.json").read_bytes() == before


def test_no_document_selected(loom: Loom) -> None:
    result = loom("show")
    assert result.code == 1 and "no document selected" in result.stderr


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b'{"format": "loom", "version": 7, "nodes": {}, "roots": []}', b'{"a": 1}'],
)
def test_bad_file_is_reported_and_never_overwritten(loom: Loom, content: bytes) -> None:
    path = loom.cwd / "bad.loom.json"
    path.write_bytes(content)
    result = loom("add", "x", "-f", "bad.loom.json")
    assert (
        result.code == 1 and "bad.loom.json" in result.stderr and "Traceback" not in result.stderr
    )
    assert path.read_bytes() == content


def test_new_refuses_to_overwrite(loom: Loom) -> None:
    loom.ok("new", "x.loom.json", "--text", "keep me")
    result = loom("new", "x.loom.json")
    assert result.code == 1 and "already exists" in result.stderr
    assert loom.ok("show", "-f", "x.loom.json").stdout == "keep me"


def test_help_lists_each_command_once_from_the_module_that_defines_it() -> None:
    import importlib

    from loom.cli.main import _MODULE_OF, HELP_ORDER, cli

    assert sorted(HELP_ORDER) == sorted(_MODULE_OF), "HELP_ORDER and COMMANDS disagree"
    for name, module in _MODULE_OF.items():
        importlib.import_module(module)
        assert name in cli.commands, f"{module} does not define `loom {name}`"


def test_every_command_has_help_with_an_example(loom: Loom) -> None:
    import click

    from loom.cli.main import cli

    ctx = click.Context(cli)

    def paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
        found = []
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            assert cmd is not None, (
                f"`loom {' '.join((*prefix, name))}` is listed but cannot be loaded"
            )
            found.append((*prefix, name))
            if isinstance(cmd, click.Group):
                found.extend(paths(cmd, (*prefix, name)))
        return found

    for path in paths(cli):
        result = loom.ok(*path, "--help")
        assert "Example" in result.stdout, f"`loom {' '.join(path)} --help` has no example"
        assert "--json" in result.stdout and "--file" in result.stdout, (
            f"`loom {' '.join(path)}` lacks --json/--file"
        )


def test_command_registry_matches_the_modules() -> None:
    """Every command a module defines is in the lazy registry, under that module (fresh process)."""
    import subprocess
    import sys

    probe = (
        "import importlib, json\n"
        "from loom.cli.main import COMMANDS, cli\n"
        "found = {}\n"
        "for module in COMMANDS:\n"
        "    before = set(cli.commands)\n"
        "    importlib.import_module(module)\n"
        "    found[module] = sorted(set(cli.commands) - before)\n"
        "print(json.dumps({'found': found, 'registry': {m: sorted(n) for m, n in COMMANDS.items()}}))\n"
    )
    out = json.loads(
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout
    )
    assert out["found"] == out["registry"]


def test_show_pipe_gets_exact_text_with_unicode(loom: Loom) -> None:
    loom.ok("new", "u.loom.json", "--text", "Ünïcödé 海 ")
    loom.ok("add", "-", input="line\n\n\n")
    assert loom.ok("show").stdout == "Ünïcödé 海 line\n\n"


def test_concurrent_cli_adds_are_all_kept(loom: Loom) -> None:
    import subprocess
    import sys

    loom.ok("new", "c.loom.json")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "loom", "add", "--root", f"p{i}", "-f", "c.loom.json"],
            cwd=loom.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(8)
    ]
    for p in procs:
        p.communicate(timeout=60)
        assert p.returncode == 0
    roots = loom.ok("tree", "--all", "--json").json()["nodes"]
    assert sorted(n["text"] for n in roots) == [f"p{i}" for i in range(8)]


def test_tree_json_is_the_drawn_window_and_all_is_the_whole_forest(loom: Loom) -> None:
    """A JSON answer is bounded as the drawing is: 200 children are not 200 objects."""
    loom.ok("new", "w.loom.json", "--text", "root")
    for i in range(30):
        loom.ok("add", "--stay", f" kid {i}")
    window = loom.ok("tree", "--json", "--width", "4").json()
    [root] = window["roots"]
    ids = [n["id"] for n in window["nodes"]]
    assert ids[0] == root and len(ids) == 1 + 4  # the root and four of its children
    [listed] = [n for n in window["nodes"] if n["id"] == root]
    assert len(listed["children"]) == 30 and set(ids[1:]) < set(listed["children"])
    assert len(loom.ok("tree", "--all", "--json").json()["nodes"]) == 31


def test_tree_json_nodes_have_the_documented_shape(story: Loom) -> None:
    nodes = story.ok("tree", "--json").json()["nodes"]  # a list: brief, no meta
    shown = story.ok("show", "--json").json()["node"]  # one node: every field
    assert set(nodes[-1]) | {"meta"} == set(shown) and "meta" not in nodes[-1]
    every = story.ok("tree", "--fields", "all").json()["nodes"]
    assert every[-1] == shown


@pytest.mark.parametrize(
    "args", [["tree", "--all"], ["search", "e"], ["show"], ["ls", "@"], ["log"]]
)
def test_a_closed_pipe_is_not_an_error(story: Loom, args: list[str]) -> None:
    import subprocess
    import sys

    import loom
    from loom import ops

    with loom.edit(story.cwd / "story.loom.json") as doc:
        for i in range(300):
            ops.add_child(doc, None, f"line {i} " * 5, move_cursor=False)
    cmd = (
        f"{sys.executable} -m loom {' '.join(args)} | head -c 1 >/dev/null; echo ${{PIPESTATUS[0]}}"
    )
    proc = subprocess.run(
        ["bash", "-c", cmd], cwd=story.cwd, capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.strip() == "0", proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["show"], ["show", "--json"], ["tree"], ["--help"]])
def test_output_to_a_full_disk_is_one_line_not_an_internal_error(
    story: Loom, args: list[str]
) -> None:
    import subprocess
    import sys

    with open("/dev/full", "wb") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "loom", *args],
            cwd=story.cwd,
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "cannot write the output (the disk is full)" in err and err.count("\n") == 1


def test_a_closed_stdout_is_not_an_internal_error(story: Loom) -> None:
    """`loom add " more" >&-`: the node is added and nothing is printed (no crash, exit 0)."""
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "loom", "add", " more"],
        cwd=story.cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=60,
        preexec_fn=lambda: os.close(1),
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert story.ok("show", "--raw").stdout.endswith(" more")


def test_undecodable_bytes_are_data_errors(story: Loom) -> None:
    bad = story("add", "-", input=b"caf\xe9")
    assert bad.code == 1 and "not UTF-8" in bad.stderr
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "loom", "add", b"bad\xff".decode("utf-8", "surrogateescape")],
        cwd=story.cwd,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "not valid UTF-8" in proc.stderr


def test_show_a_deleted_node(story: Loom) -> None:
    leaf = story.ok("info", "--json").json()["cursor"]
    story.ok("rm", leaf)
    assert story.ok("show", leaf).stdout == "The sea went out."
    assert story.ok("show", leaf, "--json").json()["node"]["archived"] is True


# ---- for newcomers at a terminal -----------------------------------------------------------


@pytest.mark.parametrize("name", ["tree", "ls"])
def test_tree_and_ls_help_explain_every_symbol(loom: Loom, name: str) -> None:
    shown = loom.ok(name, "--help").stdout
    for symbol in ("●", "◦", "•", "★", "✎", "⇲", "✉", "×N", "+N", "[N]"):
        assert symbol in shown, symbol
    assert "✎    by hand, or edited" in shown and "⇲    imported" in shown


def test_show_help_explains_the_probability_colours(loom: Loom) -> None:
    shown = " ".join(loom.ok("show", "--help").stdout.split())
    assert "green ≥0.8, bright green ≥0.5, yellow ≥0.2, bright red ≥0.05, red below" in shown


def test_check_takes_the_file_as_an_argument(story: Loom) -> None:
    assert story.ok("check", "story.loom.json").stdout == "story.loom.json: ok (2 nodes)\n"
    assert story.ok("check", "story.loom.json", "--json").json()["valid"] is True
    assert story.ok("check", "-f", "story.loom.json").stdout.endswith("ok (2 nodes)\n")
    story.ok("new", "other.loom.json")
    assert story.ok("check", "story.loom.json").stdout.startswith("story.loom.json")
    missing = story("check", "nowhere.loom.json")
    assert missing.code == 1 and "nowhere.loom.json" in missing.stderr
    both = story("check", "story.loom.json", "-f", "other.loom.json")
    assert both.code == 2 and both.stderr.count("\n") == 1


def test_history_shows_a_sibling_version_by_id_and_aligns_columns(story: Loom) -> None:
    root = story.ok("tree", "--json").json()["roots"][0]
    version = story.ok("edit", root, "--text", "The lake", "--json").json()["node"]["id"]
    story.ok("edit", version, "--text", "The pond")  # a leaf: edited in place
    assert story.ok("history", root, "--show", version[:6]).stdout == "The pond"
    assert story.ok("history", root, "--show", version).stdout == "The pond"
    assert story.ok("history", root, "--show", "0").stdout == "The sea"
    shown = story.ok("history", version, "--json").json()["entries"]
    assert [e.get("index", e.get("id")) for e in shown] == [0, 1, root]
    lines = story.ok("history", version).stdout.splitlines()
    assert len(lines) == 3
    starts = {len(re.split(r"\d{4}-\d\d-\d\dT", line)[0]) for line in lines}  # timestamps
    kinds = {
        line.index(k) for line, k in zip(lines, ("earlier", "current", "version"), strict=True)
    }
    assert len(starts) == 1 and len(kinds) == 1
    bad = story("history", version, "--show", "7")
    assert (
        bad.code == 2 and f"this node has texts 0..1 and sibling versions {root[:8]}" in bad.stderr
    )


def test_params_says_when_a_node_was_not_generated(story: Loom) -> None:
    shown = story.ok("params").stdout.splitlines()
    assert "was not generated; this is what a generation from it would use now" in shown[0]
    assert "max_tokens" in shown[1]
    assert "Parameters not listed are left to embedded's own defaults" in shown[-1]
    explained = story.ok("params", "--explain").stdout.splitlines()
    assert "not generated" not in explained[0] and "not listed" in explained[-1]
    assert "explain" in story.ok("params", "--json").json()  # --json unchanged
    helped = " ".join(story.ok("params", "--help").stdout.split())
    assert "Plain `loom params NODE` shows what made NODE" in helped
    assert "what a generation from NODE would use now" in helped


def test_presets_show_only_what_each_changes(loom: Loom) -> None:
    from test_render import on_terminal

    result = on_terminal(loom.cwd, "presets", columns=80)
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) < 80 for line in lines)
    text = result.stdout
    assert text.count("typical_p") <= 1  # neutral's settings once, not on every line
    creative = lines.index(next(line for line in lines if line.startswith("creative ")))
    assert lines[creative + 1].strip() == "neutral + temperature=1.1, min_p=0.07"
    full = {p["name"]: p["params"] for p in loom.ok("presets", "--json").json()["presets"]}
    assert len(full["creative"]) >= 13 and full["creative"]["typical_p"] == 1.0


def test_a_missing_editor_is_a_one_line_error(story: Loom) -> None:
    from test_render import on_terminal

    result = on_terminal(story.cwd, "edit", env={"EDITOR": "nonexistent-editor", "VISUAL": ""})
    assert result.code == 1, result.stderr
    assert result.stderr.startswith("loom: error: cannot run the editor 'nonexistent-editor'")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert story.ok("show").stdout == "The sea went out."


def test_edit_falls_back_to_vi_on_a_terminal(story: Loom, tmp_path: Path) -> None:
    from test_render import on_terminal

    tools = tmp_path / "bin"
    tools.mkdir()
    vi = tools / "vi"
    vi.write_text('#!/bin/sh\nprintf " came back." > "$1"\n')
    vi.chmod(0o755)
    unset = {"EDITOR": "", "VISUAL": "", "PATH": str(tools)}
    result = on_terminal(story.cwd, "edit", env=unset)
    assert result.code == 0, result.stderr
    assert story.ok("show").stdout == "The sea came back."
    vi.unlink()
    result = on_terminal(story.cwd, "edit", env=unset)
    assert result.code == 2 and "no $EDITOR set" in result.stderr


def test_the_demo_keeps_the_users_loom_home_and_says_how_to_run_loom(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib.util
    import subprocess

    spec = importlib.util.spec_from_file_location(
        "demo", Path(__file__).resolve().parent.parent / "examples" / "demo.py"
    )
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    monkeypatch.setattr(demo, "HERE", tmp_path)
    monkeypatch.setattr(demo, "DEMO", tmp_path / "demo")
    monkeypatch.setattr(demo, "DOC", tmp_path / "demo" / "lighthouse.loom.json")
    calls: list[dict[str, object]] = []

    def run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        calls.append({"args": args, **kwargs})
        out = '{"nodes": [{"id": "abc"}]}' if kwargs.get("stdout") else None
        return subprocess.CompletedProcess(args, 0, out)

    monkeypatch.setattr(demo.subprocess, "run", run)
    demo.main()
    assert calls and all(c.get("env") is None for c in calls)  # inherits LOOM_HOME, if any
    assert all(c["args"][-1] == str(tmp_path / "demo" / "lighthouse.loom.json") for c in calls)
    gens = [c["args"] for c in calls if "gen" in c["args"]]  # type: ignore[operator]
    assert gens and all("embedded" in g for g in gens)  # type: ignore[operator]
    assert ". .venv/bin/activate" in demo.hint() and ".venv/bin/loom" in demo.hint()


def test_undo_more_than_possible_changes_nothing(story: Loom) -> None:
    before = (story.cwd / "story.loom.json").read_bytes()
    result = story("undo", "99")
    assert result.code == 1 and "only 2 change(s) can be undone" in result.stderr
    assert (story.cwd / "story.loom.json").read_bytes() == before


@pytest.mark.parametrize(
    ("piped", "stored"),
    [
        (" more\n", " more"),  # what `echo " more" | loom add -` sends
        (" more\r\n", " more"),
        (" more", " more"),
        (" more\n\n", " more\n"),  # exactly one newline goes, as $(…) would take
        ("\n", ""),
    ],
)
def test_standard_input_loses_one_final_newline(loom: Loom, piped: str, stored: str) -> None:
    loom.ok("new", "s.loom.json", "--text", "Root")
    node = loom.ok("add", "-", input=piped).stdout.strip()
    assert loom.ok("info", node, "--json").json()["node"]["text"] == stored
    loom.ok("note", "-", input="a note\n")
    assert loom.ok("info", "@", "--json").json()["node"]["note"] == "a note"
    (loom.cwd / "seg.txt").write_text(" file\n", encoding="utf-8")
    from_file = loom.ok("add", "--from-file", "seg.txt").stdout.strip()
    assert loom.ok("info", from_file, "--json").json()["node"]["text"] == " file\n"  # as it is


def test_an_edit_that_changes_nothing_says_so_and_writes_nothing(story: Loom) -> None:
    path = story.cwd / "story.loom.json"
    text = story.ok("show", "--segment", "--raw").stdout
    before = path.read_bytes()
    stamp = path.stat().st_mtime_ns
    result = story.ok("edit", "--text", text, "--json").json()
    assert result["changed"] is False and result["new_version"] is False
    assert path.read_bytes() == before and path.stat().st_mtime_ns == stamp
    assert story.ok("edit", "--text", text + "!", "--json").json()["changed"] is True


def test_top_help_gives_each_command_its_whole_first_sentence(loom: Loom) -> None:
    listing = loom.ok("--help").stdout.split("Commands:", 1)[1]
    assert "..." not in listing
    flat = " ".join(listing.split())
    assert (
        "info Describe the document, or one NODE in detail (its metadata and generation record)."
        in flat
    )
    assert (
        "ingest Bring in text: files, directories (recursively), '-' (standard input) or URLs."
        in flat
    )


def test_digits_int_cannot_read_are_refused_not_a_crash(story: Loom) -> None:
    """'²' is a digit to str.isdigit() but not to int(): each of these crashed (exit 70)."""
    import json

    # A stray file named like a temp file of a process "²": every save walked into it.
    (story.cwd / ".story.loom.json.tmp-²-1").write_text("")
    huge = story.cwd / f".story.loom.json.tmp-{'9' * 30}-1"  # no process has that id
    huge.write_text("")
    story.ok("add", " Gulls.")
    assert not huge.exists()  # a leftover of no living process: removed
    result = story("history", "--show", "²")
    assert result.code == 2 and "--show" in result.stderr
    path = story.cwd / "story.loom.json"
    data = json.loads(path.read_text())
    data["defaults"] = {"n": "²"}
    path.write_text(json.dumps(data))
    result = story("gen")
    assert result.code == 1 and "defaults.n must be a whole number" in result.stderr
