"""loom.files: atomic replacement, stale temp files from killed writers, reads that refuse what they cannot bound."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loom import files
from loom.errors import BadInput, StorageError

from conftest import Loom


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_write_atomic_replaces_keeping_the_mode_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_bytes(b"old")
    target.chmod(0o600)
    files.write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_write_atomic_failure_leaves_the_target_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_bytes(b"old")

    def refuse() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(StorageError, match="the disk is full"):
        files.write_atomic(target, b"new", before_replace=refuse, note="; unchanged")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_only_temps_of_dead_processes_are_stale(tmp_path: Path) -> None:
    target = tmp_path / "s.loom.json"
    dead = tmp_path / f".s.loom.json.tmp-{dead_pid()}-123"
    live = tmp_path / f".s.loom.json.tmp-{os.getpid()}-456"
    other = tmp_path / f".other.loom.json.tmp-{dead_pid()}-1"
    for p in (dead, live, other):
        p.write_bytes(b"x" * 10)
    assert files.stale_temps(target) == [dead]
    assert files.remove_stale_temps(target) == [dead]
    assert not dead.exists() and live.exists() and other.exists()


def test_a_save_removes_temps_left_by_a_killed_save_and_check_reports_them(loom: Loom) -> None:
    loom.ok("new", "s.loom.json", "--text", "root")
    leftover = loom.cwd / f".s.loom.json.tmp-{dead_pid()}-99"
    leftover.write_bytes(b"{" * 1000)
    report = loom.ok("check", "--json").json()
    assert report["stale_temp_files"] == [str(leftover)]
    assert "temp file(s) (1,000 bytes)" in loom.ok("check").stdout
    loom.ok("add", " more")
    assert not leftover.exists()
    assert loom.ok("check", "--json").json()["stale_temp_files"] == []


def test_read_bytes_refuses_fifos_devices_and_folders_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(BadInput, match="not a regular file"):
        files.read_bytes(fifo)  # no writer: a plain open() would wait forever
    with pytest.raises(BadInput, match="not a regular file"):
        files.read_bytes("/dev/zero")
    with pytest.raises(BadInput, match="is a folder"):
        files.read_bytes(tmp_path)
    with pytest.raises(BadInput, match="no such file"):
        files.read_bytes(tmp_path / "missing")


def test_read_bytes_limit(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    assert files.read_bytes(big, limit=101) == b"x" * 101
    with pytest.raises(BadInput, match="101 bytes, over the 100 bytes limit"):
        files.read_bytes(big, limit=100)
