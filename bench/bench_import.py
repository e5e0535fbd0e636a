"""`loom import` of a hostile pyloom file against an honest one of the same shape.

The hostile file points 1,000 nodes at one model response with 6,400 tokens (about
1.25 MB on disk); the baseline, measured in the same run, is the same tree without
the response. Each import runs as its own `loom import FILE --new OUT` process and
reports wall time, peak RSS and the document's size, then `loom show` on the result.

    python bench/bench_import.py
    python bench/bench_import.py --nodes 200     # smaller, quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from interop_support import shared_response_tree  # noqa: E402


def run(args: list[str], cwd: Path) -> tuple[float, int, int]:
    """Wall seconds, peak RSS in MB and exit code of one `loom` process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["LOOM_HOME"] = str(cwd / "home")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loom", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"  loom {' '.join(args)} -> exit {code}: {err.strip()[:200]}")
    return elapsed, usage.ru_maxrss // 1024, code


def measure(name: str, tree: object, work: Path) -> dict[str, float]:
    source = work / f"{name}.json"
    source.write_text(json.dumps(tree), encoding="utf-8")
    out = work / f"{name}.loom.json"
    seconds, rss, code = run(["import", str(source), "--new", str(out), "--force"], work)
    size = out.stat().st_size if out.exists() and code == 0 else 0
    show = run(["-f", str(out), "show"], work) if size else (0.0, 0, 1)
    return {
        "input_mb": source.stat().st_size / 1e6,
        "import_s": seconds,
        "import_rss_mb": rss,
        "doc_mb": size / 1e6,
        "show_s": show[0],
        "show_rss_mb": show[1],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=6400)
    args = parser.parse_args()
    hostile = shared_response_tree(args.nodes, args.tokens)
    honest = json.loads(json.dumps(hostile))
    honest.pop("model_responses")
    for child in honest["root"]["children"]:
        child.pop("generation")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = measure("baseline", honest, work)
        bad = measure("shared", hostile, work)
    print(f"{args.nodes} nodes sharing one response of {args.tokens} tokens")
    print(f"{'':16}{'baseline':>12}{'shared':>12}{'ratio':>10}")
    for key in base:
        ratio = bad[key] / base[key] if base[key] else float("nan")
        print(f"{key:16}{base[key]:12.2f}{bad[key]:12.2f}{ratio:10.1f}x")


if __name__ == "__main__":
    main()
