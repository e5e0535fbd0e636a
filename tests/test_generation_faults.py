"""Generation faults found in outside testing, each through real processes and a real server."""

from __future__ import annotations

import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Loom
from fakeprovider import Fail, FakeProvider, Hang, Reply


def test_a_provider_that_never_answers_is_bounded_by_the_deadline(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    """Accepting the connection and saying nothing used to block for ~12 minutes."""
    fake_provider.script(Hang(600), Hang(600), Hang(600), Hang(600))
    result = woven("gen", "-n", "1", "--timeout", "2", env=woven.env)  # type: ignore[attr-defined]
    # The deadline ended it, not the HTTP read timeout (90 s, retried): that one says "no data".
    assert result.code == 1
    assert "no answer within the 2 s deadline" in result.stderr
    assert "--timeout" in result.stderr and result.stderr.count("\n") == 1
    assert len(fake_provider.requests) == 1  # nothing was retried past the deadline
    assert woven.ok("ls", "--fields", "all").json()["nodes"] == []


def test_the_deadline_comes_from_the_model_when_not_given(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    models = Path(os.environ["LOOM_HOME"]) / "models.toml"
    woven.ok(
        "models", "add", "slow", "--provider", "openai", "--base-url", fake_provider.openai_url,
        "--model", "m", "--key-env", "FAKE_KEY", "--timeout", "1.5",
    )  # fmt: skip
    assert "timeout = 1.5" in models.read_text()
    fake_provider.script(Hang(600))
    result = woven("gen", "-n", "1", "-m", "slow", "--fields", "all", env=woven.env)  # type: ignore[attr-defined]
    error = result.error()["error"]
    assert result.code == 1 and "1.5 s deadline" in error["message"]
    assert "the model's timeout option" in error["message"]


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("timeout", '"soon"'),
        ("timeout", "-5"),
        ("timeout", "nan"),
        ("concurrency", '"many"'),
        ("concurrency", "0"),
        ("read_timeout", '"x"'),
        ("max_retries", "1.5"),
        ("stream", '"no"'),
        ("capabilities", "{ n = 1 }"),
    ],
)
def test_a_bad_model_option_is_one_line_naming_it(
    woven: Loom, fake_provider: FakeProvider, option: str, value: str
) -> None:
    """Options typed by hand in models.toml: each used to crash (exit 70), end every branch
    at once with "no answer within the -5 s deadline", or be read as something else."""
    models = Path(os.environ["LOOM_HOME"]) / "models.toml"
    models.write_text(
        models.read_text()
        + f'\n[models.odd]\nprovider = "openai"\nbase_url = "{fake_provider.openai_url}"\n'
        + f'model = "m"\nkey_env = "FAKE_KEY"\n[models.odd.options]\n{option} = {value}\n'
    )
    result = woven("gen", "-n", "1", "-m", "odd", env=woven.env)  # type: ignore[attr-defined]
    assert result.code == 1, result.stderr
    assert f"model 'odd': option {option} must be" in result.stderr
    assert result.stderr.count("\n") == 1
    assert fake_provider.requests == []


def test_a_read_timeout_is_retried_once_not_four_times(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    models = Path(os.environ["LOOM_HOME"]) / "models.toml"
    models.write_text(
        models.read_text()
        + f'\n[models.quick]\nprovider = "openai"\nbase_url = "{fake_provider.openai_url}"\n'
        + 'model = "m"\nkey_env = "FAKE_KEY"\n[models.quick.options]\nread_timeout = 0.5\n'
    )
    fake_provider.script(Hang(5), Hang(5), Hang(5), Hang(5))
    result = woven("gen", "-n", "1", "-m", "quick", env=woven.env)  # type: ignore[attr-defined]
    assert result.code == 1 and "no data from" in result.stderr
    assert "gave up after 2 attempts" in result.stderr
    assert len(fake_provider.requests) == 2


def test_text_streamed_before_the_deadline_is_kept_marked_incomplete(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    fake_provider.script(Reply([" one two " * 40], chunk_delay=0.1, finish_reason="stop"))
    result = woven("gen", "-n", "1", "--timeout", "1.5", "--fields", "all", env=woven.env)  # type: ignore[attr-defined]
    assert result.code == 1 and "deadline" in result.error()["error"]["message"]
    [kid] = woven.ok("ls", "--fields", "all").json()["nodes"]
    assert kid["text"].startswith(" one two") and kid["meta"]["incomplete"] is True
    assert "deadline" in kid["meta"]["gen"]["error"]


def hold_lock(path: Path) -> subprocess.Popen[bytes]:
    """Another process holding the document's writer lock until killed."""
    script = (
        "import sys, time\n"
        "from loom import store\n"
        "with store.locked(sys.argv[1]):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
    return proc


def test_a_lock_held_past_its_timeout_sends_the_texts_to_recovery(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    doc = woven.cwd / "s.loom.json"
    before = doc.read_bytes()
    fake_provider.script(Reply([" kept one", " kept two"], finish_reason="stop"))
    holder = hold_lock(doc)
    try:
        env = {**woven.env, "LOOM_LOCK_TIMEOUT": "1"}  # type: ignore[attr-defined]
        result = woven("gen", "-n", "2", "--fields", "all", env=env)
    finally:
        holder.kill()
        holder.wait()
    assert result.code == 1 and doc.read_bytes() == before
    error = result.error()["error"]
    assert error["code"] == "locked"
    assert "loom recover" in error["message"] and error["details"]["recovery"] in error["message"]
    listed = woven.ok("recover", "--list", "--fields", "all").json()["pending"]
    assert [r["node_count"] for r in listed] == [2]
    made = woven.ok("recover", "--fields", "all").json()["nodes"]
    assert sorted(n["text"] for n in made) == [" kept one", " kept two"]
    assert all(n["meta"]["gen"]["model"] == "base" for n in made)
    root = woven.ok("show", "--json").json()["node"]
    assert {n["parent"] for n in made} == {root["id"]}
    assert woven.ok("recover", "--list", "--fields", "all").json()["pending"] == []
    assert not Path(error["details"]["recovery"]).exists()
    woven.ok("undo")  # one undoable step
    assert woven.ok("ls", "--fields", "all").json()["nodes"] == []


def test_a_full_disk_at_the_final_write_keeps_the_texts(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    """The document is larger than the file-size limit, the recovery file is not."""
    woven.ok("add", "-", input="x" * 300_000)
    doc = woven.cwd / "s.loom.json"
    before = doc.read_bytes()
    fake_provider.script(Reply([" paid for"], finish_reason="stop"))
    proc = subprocess.run(
        [sys.executable, "-m", "loom", "gen", "-n", "1"],
        cwd=woven.cwd,
        env={**os.environ, **woven.env},  # type: ignore[attr-defined]
        capture_output=True,
        timeout=120,
        preexec_fn=lambda: (
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN),
            resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000)),
        ),
    )
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "cannot save" in err and "loom recover" in err and err.count("\n") == 1
    assert doc.read_bytes() == before
    [made] = woven.ok("recover", "--fields", "all").json()["nodes"]
    assert made["text"] == " paid for"


def test_recovered_children_of_a_changed_or_deleted_parent_become_roots(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    doc = woven.cwd / "s.loom.json"
    root = woven.ok("show", "--json").json()["node"]["id"]
    for _ in range(2):
        doc.chmod(0o444)
        fake_provider.script(Reply([" after"], finish_reason="stop"))
        result = woven("gen", "-n", "1", env=woven.env)  # type: ignore[attr-defined]
        assert result.code == 1 and "read-only" in result.stderr
        assert "loom recover" in result.stderr
        doc.chmod(0o644)
    [first, second] = woven.ok("recover", "--list", "--fields", "all").json()["pending"]
    woven.ok("rm", root)  # deleted, not purged: its text is still there to continue
    [made] = woven.ok("recover", first["file"], "--fields", "all").json()["nodes"]
    assert made["parent"] is None and made["text"] == "Once upon a time after"
    assert made["meta"]["orphan_of"] == root
    woven.ok("restore", root)
    woven.ok("edit", root, "--in-place", "--text", "Once upon a different time")
    [made] = woven.ok("recover", second["file"], "--fields", "all").json()["nodes"]
    assert made["parent"] is None and made["text"] == " after"
    assert made["meta"]["prompt_missing"] is True


def test_recover_adds_a_file_once_even_if_it_was_not_deleted(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    """A recover killed after saving, before deleting the file (or two recovers at once,
    both reading the list before the lock): the texts must not be added a second time."""
    doc = woven.cwd / "s.loom.json"
    doc.chmod(0o444)
    fake_provider.script(Reply([" once"], finish_reason="stop"))
    failed = woven("gen", "-n", "1", "--json", env=woven.env)  # type: ignore[attr-defined]
    doc.chmod(0o644)
    saved = Path(failed.error()["error"]["details"]["recovery"])
    kept = saved.read_bytes()
    [made] = woven.ok("recover", "--json").json()["nodes"]
    assert made["text"] == " once" and not saved.exists()
    saved.write_bytes(kept)  # as if that recover had died before deleting it
    again = woven.ok("recover", "--json").json()
    assert again["nodes"] == [] and again["files"] == [str(saved)]
    assert not saved.exists()  # the document holds its texts: the file is done with
    assert [c["id"] for c in woven.ok("ls", "--json").json()["nodes"]] == [made["id"]]


def test_a_recovery_file_name_takes_only_safe_characters_of_the_document_id(
    tmp_path: Path,
) -> None:
    from loom.generation import recovery

    saved = recovery.save(tmp_path / "d.loom.json", "../../../x/y", None, "", [{"text": "t"}])
    assert saved.parent == recovery.folder() and "-xy-" in saved.name
    assert recovery.read(saved).document_id == "../../../x/y"


def test_recover_refuses_a_file_that_is_not_a_recovery(woven: Loom) -> None:
    bogus = woven.cwd / "bogus.json"
    bogus.write_text('{"nodes": 3}')
    result = woven("recover", str(bogus))
    assert result.code == 1 and "not a loom recovery file" in result.stderr
    assert result.stderr.count("\n") == 1


def test_probe_fails_when_every_request_fails(woven: Loom, fake_provider: FakeProvider) -> None:
    fake_provider.script(*[Fail(401)] * 40)
    result = woven("probe", "chat", "--json", env=woven.env)  # type: ignore[attr-defined]
    assert result.code == 1 and result.stderr.count("\n") == 1
    error = result.error()  # the one object on stdout
    assert error["ok"] is False and "every probe request" in error["error"]["message"]
    assert error["error"]["details"]["methods"] and all(
        m["ok"] == 0 for m in error["error"]["details"]["methods"]
    )


# Files Python runs before loom's entry point can set up its handling: an interrupt there
# is the interpreter's to report, like one during its own start.
_BEFORE_ENTRY = re.compile(
    rb'File "[^"]*(?:/loom/__init__\.py|/loom/__main__\.py|/cli/__init__\.py|/bin/loom)"'
)
_LOOM_FRAME = re.compile(rb'File "[^"]*/loom/[^"]*"')


def test_ctrl_c_while_loom_starts_prints_no_traceback_from_loom(loom: Loom) -> None:
    """Until its own handling is ready, loom lets SIGINT end the process quietly.

    The interpreter's own start (site, .pth files, `python -m`) comes before any of loom
    and can still report an interrupt in its own words; what must never appear is a
    traceback through loom's own modules, and an interrupt that lands in loom is quiet.
    """
    loom.ok("new", "s.loom.json", "--text", "root")
    began = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    interpreter = time.monotonic() - began
    rng = random.Random(7)
    quiet = 0
    for _ in range(16):
        proc = loom.start("show")
        time.sleep(interpreter + rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        frames = _LOOM_FRAME.findall(err)
        assert all(_BEFORE_ENTRY.match(f) for f in frames), err.decode()
        if frames or b"Traceback" in err or b"Fatal Python error" in err:
            continue  # the interpreter was interrupted before loom's entry point ran
        if proc.returncode != 0:
            # Silent while loom starts; once its handling is up, the usual one line.
            assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, err)
            assert err.strip() in (b"", b"loom: error: interrupted"), err.decode()
            quiet += 1
    assert quiet, "no interrupt landed while loom was starting"


def test_json_errors_for_recover(woven: Loom) -> None:
    result = woven("recover", "--all")
    assert result.code == 2 and "--all goes with --list" in result.stderr
    listed = json.loads(woven.ok("recover", "--list", "--all", "--fields", "all").stdout)
    assert listed == {"ok": True, "command": "recover", "pending": []}


@pytest.mark.parametrize("value", ["0", "-3", "soon"])
def test_a_bad_timeout_is_a_usage_error(woven: Loom, value: str) -> None:
    result = woven("gen", "--timeout", value)
    assert result.code == 2 and "--timeout" in result.stderr
