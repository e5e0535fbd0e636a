"""The public library API: `loom.__all__` is a promise, and `import loom` costs nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import loom

PUBLIC = {
    # documents and their operations
    "Document", "Node", "KINDS", "SCHEMA_VERSION", "open", "edit", "new", "save", "ops",
    "store", "transaction", "undo", "redo", "search",
    # errors
    "LoomError", "AmbiguousId", "BackendError", "ConfigError", "DocumentError", "Interrupted",
    "InvalidOperation", "LockTimeout", "NotFound", "StorageError", "UsageError",
    # generation
    "agenerate", "generate", "GenerationRequest", "Generation", "Context", "Message",
    "BackendPool", "events", "chat",
    # other trees and text; models
    "formats", "import_file", "export", "ingest", "config", "ModelConfig", "get_model",
    "all_models", "__version__",
}  # fmt: skip


def test_all_is_the_public_api_and_every_name_resolves() -> None:
    assert set(loom.__all__) == PUBLIC, "a public name was added or removed: say so here"
    assert len(loom.__all__) == len(set(loom.__all__))
    for name in loom.__all__:
        assert getattr(loom, name) is not None, name
    assert set(dir(loom)) >= PUBLIC


def test_import_loom_loads_nothing_else() -> None:
    script = "import sys, json, loom; print(json.dumps(sorted(m for m in sys.modules if m.startswith('loom'))))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == ["loom"]


def test_new_returns_a_document_to_keep_using(tmp_path: Path) -> None:
    path = tmp_path / "n.loom.json"
    doc = loom.new(path, title="fresh")
    root = loom.ops.add_child(doc, None, "Once")
    loom.save(doc, path)
    again = loom.open(path)
    assert again.title == "fresh" and again.node(root.id).text == "Once"
    assert again.cursor_id == root.id
