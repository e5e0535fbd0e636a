"""The options for 1M-node documents, measured (the figures in docs/large-documents.md).

Each option runs in its own process on the same deep and bushy document (the cursor
~39k levels deep), so every figure is a whole process with its own peak memory:

- read whole: what every command paid before (orjson decode; `show` added little);
- cache of the parsed document: marshal, keyed by the file's identity;
- cache of the structure only (parent, children, archived per node): marshal;
- save by rewriting the file: encode + write + fsync (every save, every cursor move);
- index + records on demand: open the index, walk to the root, read the texts
  on the path (what `show` needs);
- append a change: one log line + fsync.

    python bench/storage_options.py [--nodes 1000000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

SETUP = f"import sys, time; sys.path.insert(0, {str(ROOT / 'src')!r}); path = sys.argv[1]\n"
OPTIONS = {
    "read whole (orjson)": "import orjson; d = orjson.loads(open(path, 'rb').read())",
    "cache of the parsed document (marshal)": "import marshal; d = marshal.loads(open(path + '.doc', 'rb').read())",
    "cache of the structure only (marshal)": "import marshal; d = marshal.loads(open(path + '.struct', 'rb').read())",
    "save by rewriting (encode + write + fsync)": (
        "import orjson, os; d = orjson.loads(open(path, 'rb').read()); t = time.perf_counter()\n"
        "b = orjson.dumps(d); f = os.open(path + '.copy', os.O_WRONLY | os.O_CREAT | os.O_TRUNC)\n"
        "os.write(f, b); os.fsync(f); os.close(f)\n"
        "print(f'{time.perf_counter() - t:.3f}', file=sys.stderr)"
    ),
    "index + records on demand (show's reads)": (
        "from loom import store; doc = store.load(path); text = doc.full_text(doc.cursor_id)"
    ),
    "append a change (one log line + fsync)": (
        "import loom; from loom import ops\n"
        "with loom.edit(path) as doc: ops.add_child(doc, doc.cursor_id, ' x', move_cursor=False)"
    ),
}


def run(code: str, path: Path) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        [PY, "-c", SETUP + code, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    assert proc.stderr is not None
    note = proc.stderr.read().decode().strip()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {code}\n{note}")
    return elapsed, usage.ru_maxrss // 1024, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bushy.loom.json"
        subprocess.run(
            [PY, str(ROOT / "bench" / "shapes.py"), str(args.nodes), "bushy", str(path)], check=True
        )
        prepare = (
            "import orjson, marshal; d = orjson.loads(open(path, 'rb').read())\n"
            "open(path + '.doc', 'wb').write(marshal.dumps(d))\n"
            "s = {k: (v.get('parent'), v.get('children'), bool(v.get('archived'))) for k, v in d['nodes'].items()}\n"
            "open(path + '.struct', 'wb').write(marshal.dumps(s))\n"
            "import loom\n"
            "with loom.edit(path) as doc: pass\n"
            "doc.dirty = True\n"
            "from loom import store; store.save(doc, path)  # the indexed layout, converted\n"
        )
        run(prepare, path)
        print(f"\n{args.nodes:,} nodes, {path.stat().st_size / 1e6:.0f} MB, deep and bushy")
        print(f"{'option':<46}{'time':>9}{'peak':>9}")
        for name, code in OPTIONS.items():
            secs, peak, note = run(code, path)
            extra = f"  (the save alone: {note} s)" if note else ""
            print(f"{name:<46}{secs:>8.2f}s{peak:>6} MB{extra}")


if __name__ == "__main__":
    main()
