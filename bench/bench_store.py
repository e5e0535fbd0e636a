"""Whole-process cost of `loom show` and `loom add` on 1k- and 100k-node documents.

Every figure is compared with baselines measured in the same run on the same
file: `python -c pass`, and a bare Python process that reads the file and does
an orjson decode + encode (the least any JSON-file tool must do). Also: memory
of a loaded 100k-node document, and the SIGKILL crash loop at 200 rounds.

    python bench/bench_store.py            # everything
    python bench/bench_store.py --quick    # 1k only, fewer repeats
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from loom import ops, store  # noqa: E402
from loom.document import Document  # noqa: E402
from shapes import WORDS  # noqa: E402  (the same words as the other shapes' texts)


def build(n: int, seed: int = 1) -> Document:
    """A realistic tree: mostly deep branches with bursts of siblings, ~400 chars per node."""
    rng = random.Random(seed)
    doc = Document.new(title=f"bench {n}")
    ids: list[str] = []
    parent: str | None = None
    for i in range(n):
        text = " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 100)))
        meta = (
            {"gen": {"model": "gemma-3-270m", "params": {"temperature": 0.9, "max_tokens": 64}}}
            if i % 2
            else None
        )
        node = ops.add_child(
            doc, parent, text, kind="model" if meta else "human", meta=meta, move_cursor=False
        )
        ids.append(node.id)
        parent = node.id if rng.random() < 0.7 else rng.choice(ids)
    doc.data["journal"] = {"undo": [], "redo": []}
    ops.goto(doc, ids[-1])
    return doc


def user_env() -> dict[str, str]:
    """The environment a user has: bytecode caches written and used (some sandboxes turn them off)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(cmd: list[str], repeat: int, env: dict[str, str]) -> float:
    """Median wall time of a whole process, in seconds, after one uncounted warm-up run."""
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=True)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench_size(n: int, repeat: int, workdir: Path) -> None:
    path = workdir / f"bench-{n}.loom.json"
    t0 = time.perf_counter()
    doc = build(n)
    store.save(doc, path)
    size = path.stat().st_size
    print(f"\n## {n} nodes, {size / 1e6:.1f} MB (built in {time.perf_counter() - t0:.1f}s)")
    env = {**user_env(), "LOOM_HOME": str(workdir / "home"), "PYTHONPATH": str(ROOT / "src")}
    py = sys.executable
    bare = "import orjson,sys; d=orjson.loads(open(sys.argv[1],'rb').read()); orjson.dumps(d)"
    bare_write = (
        "import orjson,sys,os; p=sys.argv[1]; d=orjson.loads(open(p,'rb').read()); "
        "b=orjson.dumps(d); "
        "f=open(p+'.tmp','wb'); f.write(b); f.flush(); os.fsync(f.fileno()); f.close(); os.replace(p+'.tmp', p+'.copy')"
    )
    results = {
        "python -c pass": timed([py, "-c", "pass"], repeat, env),
        "bare decode+encode": timed([py, "-c", bare, str(path)], repeat, env),
        "bare decode+encode+write+fsync": timed([py, "-c", bare_write, str(path)], repeat, env),
        "loom show": timed([py, "-m", "loom", "show", "-f", str(path)], repeat, env),
        "loom show --json": timed(
            [py, "-m", "loom", "show", "--json", "-f", str(path)], repeat, env
        ),
        "loom add": timed(
            [py, "-m", "loom", "add", " more", "--stay", "-f", str(path)], repeat, env
        ),
        "loom goto": timed(
            [py, "-m", "loom", "goto", doc.root_ids[0], "-f", str(path)], repeat, env
        ),
    }
    base, bare_t, bare_w = (
        results["python -c pass"],
        results["bare decode+encode"],
        results["bare decode+encode+write+fsync"],
    )
    print(f"{'command':<32}{'median':>10}{'÷ pass':>9}{'÷ bare':>9}{'÷ bare+write':>14}")
    for name, secs in results.items():
        print(
            f"{name:<32}{secs * 1000:>8.1f}ms{secs / base:>9.2f}{secs / bare_t:>9.2f}{secs / bare_w:>14.2f}"
        )


def memory_of_loaded(workdir: Path, n: int) -> None:
    path = workdir / f"bench-{n}.loom.json"
    code = (
        "import resource,sys,gc; sys.path.insert(0, sys.argv[2]);"
        "before=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "from loom import store; d=store.load(sys.argv[1]); gc.collect();"
        "after=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; print(after-before, after)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), str(ROOT / "src")],
        capture_output=True,
        text=True,
        check=True,
    )
    delta, peak = (int(x) for x in out.stdout.split())
    print(
        f"\nmemory of a loaded {n}-node document: +{delta / 1024:.0f} MB (peak RSS {peak / 1024:.0f} MB; file {path.stat().st_size / 1e6:.0f} MB)"
    )


def crash_loop(rounds: int) -> None:
    env = {**os.environ, "LOOM_CRASH_ROUNDS": str(rounds)}
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests/test_store.py"),
            "-k",
            "sigkill",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    status = (
        "all valid, no acknowledged write lost"
        if proc.returncode == 0
        else "FAILED:\n" + proc.stdout[-2000:]
    )
    print(f"\nSIGKILL crash loop, {rounds} rounds: {status} ({time.perf_counter() - start:.0f}s)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--crash-rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        bench_size(1000, 5 if args.quick else 15, workdir)
        if not args.quick:
            bench_size(100_000, 5, workdir)
            memory_of_loaded(workdir, 100_000)
            crash_loop(args.crash_rounds)


if __name__ == "__main__":
    main()
