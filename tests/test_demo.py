"""`make run`'s demo (examples/demo.py), run for real on the embedded model: the README's
quick start must keep working as the commands it drives change."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import loom

from conftest import ROOT


def test_the_make_run_demo_weaves_its_tree(tmp_path: Path, model_path: Path) -> None:
    models = Path(os.environ["LOOM_HOME"]) / "models.toml"
    models.write_text(
        '[models.embedded]\nprovider = "embedded"\nmodel = "gemma-3-270m"\n'
        f'[models.embedded.options]\nmodel_path = "{model_path}"\n'
    )
    # A copy beside its own demo/ folder: the run writes there, not into the checkout.
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "demo.py", tmp_path / "examples" / "demo.py")
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "examples" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "$ loom tree" in proc.stdout and "activate it first" in proc.stdout
    doc = loom.open(tmp_path / "demo" / "lighthouse.loom.json")
    [root] = doc.roots
    assert len(root.children) == 3
    picked = root.children[0]
    assert len(picked.children) == 2 and picked.bookmarked
