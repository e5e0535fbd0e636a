"""`loom import` and `loom export` as real subprocesses on the real files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from interop_support import cli, fixture, imported, write_json
from loom import formats, store


def test_import_each_real_file_into_a_new_document(tmp_path: Path) -> None:
    tree = tmp_path / "teleology.json"
    shutil.copy(fixture("pyloom_teleology.json"), tree)
    backups = tmp_path / "backups"
    backups.mkdir()
    shutil.copy(
        fixture("pyloom_teleology_model_responses_1.json"),
        backups / "model_responses-2023-02-14-17.03.35.json",
    )
    shutil.copy(
        fixture("pyloom_teleology_model_responses_2.json"),
        tmp_path / "model_responses-2023-02-14-18.46.35.json",
    )
    cases = [
        (fixture("openloom_existence_of_claude.json"), "openloom", 81),
        (fixture("pyloom_loom_demo.json"), "pyloom", 764),
        (tree, "pyloom", 18),
    ]
    for i, (source, fmt, count) in enumerate(cases):
        out = f"doc{i}.loom.json"
        result = cli(tmp_path, "import", str(source), "--new", out, "--json")
        assert result.code == 0, result.stderr
        report = result.json()
        assert (report["format"], report["node_count"]) == (fmt, count)
        expected = imported(source)
        # The branch's exact text (`show --raw` prints a conversation as a transcript).
        shown = cli(tmp_path, "-f", out, "export", "--format", "text")
        assert shown.stdout == expected.full_text(expected.cursor_id or "")
    info = cli(tmp_path, "-f", "doc2.loom.json", "info", "--json").json()
    assert info["document"]["title"] == "teleology"
    saved = json.loads((tmp_path / "doc2.loom.json").read_text(encoding="utf-8"))
    assert sum(1 for r in saved["nodes"].values() if "logprobs" in r.get("meta", {})) == 11


def test_import_into_the_current_document_is_one_undo(tmp_path: Path) -> None:
    assert cli(tmp_path, "new", "story.loom.json", "--text", "Before: ").code == 0
    result = cli(tmp_path, "import", str(fixture("exoloom_tree.json")), "--parent", "@", "--json")
    assert result.code == 0, result.stderr
    report = result.json()
    tree = cli(tmp_path, "tree", "--json").json()
    # The whole forest: the pruned node is there, archived.
    assert len(tree["nodes"]) == 1 + 4
    assert [n["archived"] for n in tree["nodes"]].count(True) == 1
    assert tree["cursor"] == report["cursor"]
    # Exoloom keeps no current node: the cursor goes to the imported root.
    assert cli(tmp_path, "show", "--raw").stdout == "Before: In the tidepool,"
    assert cli(tmp_path, "undo").code == 0
    assert len(cli(tmp_path, "tree", "--json").json()["nodes"]) == 1


def test_import_from_standard_input(tmp_path: Path) -> None:
    data = fixture("nanoloom_tapestry.json").read_bytes()
    result = cli(tmp_path, "import", "-", "--new", "n.loom.json", input=data)
    assert result.code == 0, result.stderr
    assert (
        cli(tmp_path, "-f", "n.loom.json", "show", "--raw").stdout
        == "The shuttle flew across the warp."
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            json.dumps(
                {"rootNodeId": "A", "nodes": {"A": {"id": "A", "text": "x", "childrenIds": ["B"]}}}
            ).encode(),
            'openloom: node "A" lists child "B" that does not exist',
        ),
        (fixture("pyloom_teleology.json").read_bytes()[:3000], "not valid JSON at byte"),
        (b'{"something": "else"}', "not a tree format loom knows (loom, jsonl, openloom"),
        (b"\x00\x01\x02binary", "binary data"),
    ],
)
def test_a_bad_file_changes_nothing(tmp_path: Path, content: bytes, message: str) -> None:
    assert cli(tmp_path, "new", "story.loom.json", "--text", "keep").code == 0
    target = tmp_path / "story.loom.json"
    before = target.read_bytes()
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    result = cli(tmp_path, "import", "bad.json")
    assert result.code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("loom: error: ") and message in lines[0], (
        result.stderr
    )
    failed = cli(tmp_path, "import", "bad.json", "--json")
    error = failed.error()
    assert error["ok"] is False and error["error"]["code"] == "bad_document"
    assert target.read_bytes() == before


def test_new_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "x.loom.json").write_text("precious", encoding="utf-8")
    result = cli(tmp_path, "import", str(fixture("loomsidian_note.json")), "--new", "x.loom.json")
    assert result.code == 1 and "already exists" in result.stderr
    assert (tmp_path / "x.loom.json").read_text(encoding="utf-8") == "precious"


def test_export_formats(tmp_path: Path) -> None:
    assert (
        cli(
            tmp_path,
            "import",
            str(fixture("openloom_existence_of_claude.json")),
            "--new",
            "c.loom.json",
        ).code
        == 0
    )
    text = cli(tmp_path, "export", "--format", "text")
    doc = store.load(tmp_path / "c.loom.json")
    assert text.code == 0 and text.stdout == doc.full_text(str(doc.cursor_id))
    # A conversation's `show --raw` is its transcript, the same as the transcript export.
    transcript = cli(tmp_path, "export", "--format", "transcript")
    assert transcript.code == 0 and transcript.stdout == cli(tmp_path, "show", "--raw").stdout
    assert transcript.stdout.startswith("User: Hey what's going on\n\nAssistant: Hi!")
    html = cli(tmp_path, "export", "-o", "tree.html")
    assert html.code == 0 and (tmp_path / "tree.html").read_text(encoding="utf-8").startswith(
        "<!DOCTYPE html>"
    )
    assert cli(tmp_path, "export", "--format", "openloom", "-o", "back.json").code == 0
    again = json.loads((tmp_path / "back.json").read_text(encoding="utf-8"))
    original = json.loads(fixture("openloom_existence_of_claude.json").read_text(encoding="utf-8"))
    assert again["currentNodeId"] == original["currentNodeId"] and set(again["nodes"]) == set(
        original["nodes"]
    )
    report = cli(tmp_path, "export", "--format", "markdown", "--json").json()
    assert report["ok"] and report["content"].startswith("# The Existence of Claude")
    lines = cli(tmp_path, "export", "--format", "jsonl").stdout.splitlines()
    assert len(lines) == 81 and all(json.loads(line)["id"] for line in lines)
    unknown = cli(tmp_path, "export", "-o", "out.xyz")
    assert unknown.code == 2 and "--format" in unknown.stderr


def test_export_of_a_subtree(tmp_path: Path) -> None:
    assert (
        cli(tmp_path, "import", str(fixture("loomsidian_data.json")), "--new", "l.loom.json").code
        == 0
    )
    roots = cli(tmp_path, "tree", "--json").json()["roots"]
    many = cli(tmp_path, "export", "--format", "loomsidian")
    assert many.code == 1 and "name the tree to export with NODE" in many.stderr
    note = cli(tmp_path, "export", "--format", "loomsidian", roots[1][:6])
    assert note.code == 0 and json.loads(note.stdout)["searchTerm"] == "owl"


def test_help_has_examples(tmp_path: Path) -> None:
    for command in ("import", "export", "ingest"):
        result = cli(tmp_path, command, "--help")
        assert result.code == 0 and "Example" in result.stdout and "--json" in result.stdout


def test_show_does_not_load_format_or_ingest_libraries(tmp_path: Path) -> None:
    """Other commands must not pay for trafilatura, pypdf, sqlite3 or the format modules."""
    doc = tmp_path / "d.loom.json"
    doc.write_bytes(formats.export(imported(fixture("nanoloom_tapestry.json")), "loom"))
    script = (
        "import sys\n"
        "from loom.cli.main import main\n"
        f"code = main(['-f', {str(doc)!r}, 'show', '--raw'])\n"
        "heavy = [m for m in ('trafilatura', 'pypdf', 'sqlite3', 'httpx2', 'lxml', 'loom.formats.forest', 'loom.formats.readers', 'loom.formats.selection', 'loom.formats.tokens', 'loom.formats.secrets', 'loom.ingest') if m in sys.modules]\n"
        "print('\\nHEAVY', heavy, code)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("HEAVY [] 0"), proc.stdout


def test_bad_response_backup_is_named(tmp_path: Path) -> None:
    broken = write_json(tmp_path / "r.json", {"cmpl-x": "not a response"})
    result = cli(
        tmp_path,
        "import",
        str(fixture("pyloom_teleology.json")),
        "--responses",
        str(broken),
        "--new",
        "t.loom.json",
    )
    assert result.code == 1 and "r.json" in result.stderr and "model-responses" in result.stderr
    assert not (tmp_path / "t.loom.json").exists()


def test_export_never_writes_over_the_document_or_its_sidecars(tmp_path: Path) -> None:
    assert cli(tmp_path, "new", "x.loom.json", "--text", "precious").code == 0
    assert cli(tmp_path, "add", " words").code == 0  # a save: the backup sidecar exists
    doc = tmp_path / "x.loom.json"
    before = doc.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.txt").symlink_to(doc)
    (tmp_path / "hard.txt").hardlink_to(doc)
    names = [
        "x.loom.json",
        "./x.loom.json",
        "sub/../x.loom.json",
        str(doc),
        "link.txt",
        "hard.txt",
        ".x.loom.json.lock",
        ".x.loom.json.bak1",
        ".x.loom.json.bak3",
    ]
    cases: list[tuple[str, tuple[str, ...]]] = [(name, ()) for name in names]
    cases += [(name, extra) for name in names[::7] for extra in (("--force",), ("--json",))]
    for name, extra in cases:
        result = cli(
            tmp_path, "-f", "x.loom.json", "export", "--format", "text", "-o", name, *extra
        )
        assert result.code != 0, (name, extra)
        if "--json" in extra:
            assert result.error()["ok"] is False
        else:
            lines = result.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("loom: error: "), result.stderr
            assert "document being exported" in lines[0]
        assert doc.read_bytes() == before, (name, extra)
    assert cli(tmp_path, "-f", "x.loom.json", "show", "--raw").stdout == "precious words"
    sidecars = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".x.loom.json."))
    assert not any(".tmp" in name for name in sidecars), sidecars


def test_export_replaces_another_document_only_with_force(tmp_path: Path) -> None:
    assert cli(tmp_path, "new", "x.loom.json", "--text", "mine").code == 0
    other = tmp_path / "other.loom.json"
    assert cli(tmp_path, "new", "other.loom.json", "--text", "theirs").code == 0
    kept = other.read_bytes()
    refused = cli(tmp_path, "-f", "x.loom.json", "export", "--format", "loom", "-o", other.name)
    assert refused.code == 1 and refused.stderr.startswith("loom: error: ")
    assert "already exists (pass --force to replace it)" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1 and other.read_bytes() == kept
    # Also when the format comes from the name, and for any format written to such a name.
    assert cli(tmp_path, "-f", "x.loom.json", "export", "-o", other.name).code == 1
    assert cli(tmp_path, "-f", "x.loom.json", "export", "--format", "text", "-o", other.name).code
    assert other.read_bytes() == kept
    forced = cli(
        tmp_path, "-f", "x.loom.json", "export", "--format", "loom", "-o", other.name, "--force"
    )
    assert forced.code == 0, forced.stderr
    assert cli(tmp_path, "-f", other.name, "show", "--raw").stdout == "mine"
    # A new document file, and existing files of other kinds, need no --force.
    assert cli(tmp_path, "-f", "x.loom.json", "export", "-o", "fresh.loom.json").code == 0
    (tmp_path / "old.txt").write_text("old", encoding="utf-8")
    assert (
        cli(tmp_path, "-f", "x.loom.json", "export", "--format", "text", "-o", "old.txt").code == 0
    )
    assert (tmp_path / "old.txt").read_text(encoding="utf-8") == "mine"


def test_export_writes_through_a_symlink_and_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import stat

    from loom import files
    from loom.cli import interop_cmds

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        real_fsync(fd)

    def replace(src: str, dst: str | Path) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(interop_cmds.os, "fsync", fsync)
    monkeypatch.setattr(interop_cmds.os, "replace", replace)
    target = tmp_path / "real.txt"
    target.write_text("old", encoding="utf-8")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    files.write_atomic(
        interop_cmds._output_path(str(link), False, tmp_path / "doc.loom.json"), b"new"
    )
    assert events == ["fsync-file", "replace", "fsync-dir"]
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "real.txt"]


def test_interop_commands_load_their_libraries_only_when_run(tmp_path: Path) -> None:
    """`loom --help` registers import/export/ingest (and with them loom.ingest's limits),
    but trafilatura, pypdf, httpx2, lxml and the format modules wait for a command to run."""
    script = (
        "import sys\n"
        "from loom.cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'loom.cli.interop_cmds' in sys.modules\n"
        "heavy = ('trafilatura', 'pypdf', 'sqlite3', 'httpx2', 'httpx', 'lxml', 'asyncio', 'loom.formats.forest', 'loom.formats.readers', 'loom.formats.selection', 'loom.formats.tokens', 'loom.formats.secrets', 'loom.generation.core', 'loom.generation.engine', 'loom.sampling')\n"
        "print('\\nHEAVY', [m for m in heavy if m in sys.modules])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("HEAVY []"), proc.stdout


@pytest.mark.parametrize("source", ["/dev/zero", "/dev/urandom", "fifo"])
def test_import_refuses_devices_and_pipes_at_once(tmp_path: Path, source: str) -> None:
    """/dev/zero filled memory, /dev/urandom and a FIFO with no writer hung: now one clear line."""
    if source == "fifo":
        os.mkfifo(tmp_path / "fifo")
    result = cli(tmp_path, "import", source, "--new", "x.loom.json", timeout=30)
    assert result.code == 1
    assert result.stderr.splitlines() == [
        f"loom: error: {source}: not a regular file (a pipe or a device); pass - to read input"
    ]
    assert not (tmp_path / "x.loom.json").exists()
    responses = cli(
        tmp_path, "import", str(fixture("pyloom_teleology.json")), "--responses", source, timeout=30
    )
    assert responses.code == 1 and "not a regular file" in responses.stderr


def test_import_size_limit_for_files_and_standard_input(tmp_path: Path) -> None:
    demo = str(fixture("pyloom_loom_demo.json"))
    big = cli(tmp_path, "import", demo, "--new", "x.loom.json", "--max-bytes", "100000")
    assert big.code == 1
    assert "1.6 MB, over the 97.7 KB limit (raise it with --max-bytes)" in big.stderr
    piped = cli(
        tmp_path, "import", "-", "--new", "x.loom.json", "--max-bytes", "1000", input=b"[" * 5000
    )
    assert piped.code == 1
    assert piped.stderr == (
        "loom: error: standard input: more than the 1000 bytes limit (raise it with --max-bytes)\n"
    )
    assert not (tmp_path / "x.loom.json").exists()
    ok = cli(tmp_path, "import", demo, "--new", "x.loom.json", "--max-bytes", "2000000")
    assert ok.code == 0, ok.stderr


def test_import_new_says_it_switches_the_current_document(tmp_path: Path) -> None:
    assert cli(tmp_path, "new", "story.loom.json", "--text", "mine").code == 0
    note = str(fixture("loomsidian_note.json"))
    result = cli(tmp_path, "import", note, "--new", "other.loom.json")
    assert result.code == 0, result.stderr
    story = (tmp_path / "story.loom.json").resolve()
    assert (
        f"loom: note: other.loom.json is now this directory's current document (it was {story})"
        in result.stderr.splitlines()
    )
    assert cli(tmp_path, "show", "--raw").stdout != "mine"  # it really did switch
    report = cli(tmp_path, "import", note, "--new", "third.loom.json", "--json").json()
    assert report["current"] is True


def test_ids_with_control_characters_never_make_a_second_line(tmp_path: Path) -> None:
    """An id like "x\\nloom: note: …" must not let a file print its own loom lines."""
    fake = "x\nloom: note: imported safely\r\x1b[2K"
    twice = {"root": {"id": "r", "text": "a", "children": [{"id": fake, "text": "b"}] * 2}}
    bad = cli(tmp_path, "import", str(write_json(tmp_path / "twice.json", twice)))
    assert bad.code == 1
    assert bad.stderr.count("\n") == 1 and "\r" not in bad.stderr and "\x1b" not in bad.stderr
    assert bad.stderr.startswith("loom: error: ")
    assert '"x\\nloom: note: imported safely\\r\\x1b[2K" is used by two nodes' in bad.stderr
    lost = {"root": {"id": "r", "text": "a", "children": []}, "selected_node_id": fake}
    ok = cli(
        tmp_path, "import", str(write_json(tmp_path / "lost.json", lost)), "--new", "l.loom.json"
    )
    assert ok.code == 0, ok.stderr
    notes = ok.stderr.splitlines()
    assert all(line.startswith("loom: note: ") for line in notes)
    assert not any(line.startswith("loom: note: imported safely") for line in notes)


def test_bidirectional_overrides_in_an_id_are_shown_escaped(tmp_path: Path) -> None:
    """A right-to-left override could make a message read differently from what it says."""
    spoof = "a\u202egnp.exe\u2066b"
    twice = {"root": {"id": "r", "text": "a", "children": [{"id": spoof, "text": "b"}] * 2}}
    bad = cli(tmp_path, "import", str(write_json(tmp_path / "twice.json", twice)))
    assert bad.code == 1
    assert "\u202e" not in bad.stderr and "\u2066" not in bad.stderr
    assert '"a\\u202egnp.exe\\u2066b" is used by two nodes' in bad.stderr


def test_one_tree_exports_say_what_they_cannot_carry(tmp_path: Path) -> None:
    """The demo has 287 deleted nodes and 308 tagged ones: OpenLoom and Loomsidian say so."""
    demo = str(fixture("pyloom_loom_demo.json"))
    assert cli(tmp_path, "import", demo, "--new", "demo.loom.json").code == 0
    result = cli(tmp_path, "export", "--format", "openloom", "-o", "d.openloom.json")
    assert result.code == 0, result.stderr
    assert result.stderr.splitlines() == [
        "loom: note: 287 deleted node(s) left out: an OpenLoom file has no deleted state",
        'loom: note: tags (308 nodes) kept in each node\'s "loom" field, which only loom reads back',
    ]
    back = cli(tmp_path, "import", "d.openloom.json", "--new", "back.loom.json")
    assert back.code == 0, back.stderr
    saved = json.loads((tmp_path / "back.loom.json").read_text(encoding="utf-8"))
    assert len(saved["nodes"]) == 764 - 287
    assert sum(1 for n in saved["nodes"].values() if n.get("tags")) == 308
    note = cli(tmp_path, "-f", "demo.loom.json", "export", "--format", "loomsidian", "--json")
    notes = note.json()["notes"]
    assert notes[0].startswith("287 deleted node(s) left out: a Loomsidian note")
    assert "bookmark titles (19 nodes)" in notes[1]
