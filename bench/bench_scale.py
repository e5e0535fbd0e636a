"""Issue 14's targets, whole process: commands on every tree shape at 100k and 1M nodes.

Every figure is a median over whole `loom` processes (after one uncounted warm-up),
compared with floors measured in the same run on the same file: `python -c pass`,
a bare orjson decode + encode of the file (what any tool that reads the JSON pays),
and `loom show` on that document. Peak memory is each process's maximum RSS.

Targets (issue 14):
- 100k nodes, every shape: tree, ls, show, goto, add ≤ 1.2 × show;
- 1M nodes (deep and bushy, ~250 MB): navigation and add ≤ 1 s and ≤ 500 MB, tree ≤ 0.5 s,
  and the file still opens in every tool that reads JSON;
- 100k adds under one parent in one `loom.edit` block ≤ 5 s.

    python bench/bench_scale.py                 # everything (~10 minutes on 2 cores)
    python bench/bench_scale.py --sizes 100000  # the 100k shapes only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import shapes  # noqa: E402

PY = sys.executable


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall time (s) and peak RSS (MB) of one whole process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err}")
    return elapsed, usage.ru_maxrss // 1024


def measure(cmds: list[list[str]], env: dict[str, str], repeat: int) -> tuple[float, int]:
    """Median time and largest peak over `repeat` runs, cycling through `cmds` (after one
    uncounted cycle: bytecode caches written, the file in the page cache)."""
    for cmd in cmds:
        run(cmd, env)
    times, peaks = [], []
    for i in range(repeat):
        secs, peak = run(cmds[i % len(cmds)], env)
        times.append(secs)
        peaks.append(peak)
    return statistics.median(times), max(peaks)


def loom(path: Path, *args: str) -> list[str]:
    return [PY, "-m", "loom", "-f", str(path), *args]


def prepare(n: int, shape: str, workdir: Path) -> tuple[Path, dict[str, str], float, int]:
    """The document as another tool writes it, then converted by loom's first save."""
    path = workdir / f"{shape}-{n}.loom.json"
    # Built in its own process: this one stays small, so forking it costs the children nothing.
    subprocess.run([PY, str(ROOT / "bench" / "shapes.py"), str(n), shape, str(path)], check=True)
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "LOOM_HOME": str(workdir / "home"),
        "PYTHONPATH": str(ROOT / "src"),
        "COLUMNS": "100",
        "LINES": "40",
    }
    first, first_peak = run(loom(path, "add", " converted", "--stay"), env)
    return path, env, first, first_peak


def targets(path: Path) -> dict[str, str]:
    data_ids = json.loads(
        subprocess.run(
            [PY, "-m", "loom", "-f", str(path), "show", "--json"],
            capture_output=True,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        ).stdout
    )
    path_ids = data_ids["path"]
    return {"cursor": path_ids[-1], "parent": path_ids[-2] if len(path_ids) > 1 else path_ids[-1]}


def bench_shape(n: int, shape: str, workdir: Path, repeat: int) -> dict[str, tuple[float, int]]:
    path, env, first, first_peak = prepare(n, shape, workdir)
    size = path.stat().st_size
    ids = targets(path)
    bare = "import orjson,sys; d=orjson.loads(open(sys.argv[1],'rb').read()); orjson.dumps(d)"
    # Each entry: the commands one measured run cycles through (goto there and back).
    commands: dict[str, list[list[str]]] = {
        "python -c pass": [[PY, "-c", "pass"]],
        "show": [loom(path, "show")],
        "tree": [loom(path, "tree")],
        "ls": [loom(path, "ls", ids["parent"])],
        "goto": [loom(path, "goto", ids["parent"]), loom(path, "goto", ids["cursor"])],
        "add": [loom(path, "add", " more", "--stay")],
        "up+down": [loom(path, "up"), loom(path, "down")],
    }
    # Interleaved rounds, so a burst of load on the machine hits every command alike.
    samples: dict[str, list[tuple[float, int]]] = {name: [] for name in commands}
    for cmds in commands.values():
        for cmd in cmds:
            run(cmd, env)  # warm-up: bytecode caches written, the file in the page cache
    for _ in range(repeat):
        for name, cmds in commands.items():
            for cmd in cmds:  # there and back within the round: the cursor ends where it was
                samples[name].append(run(cmd, env))
    results = {
        name: (statistics.median(s[0] for s in runs), max(s[1] for s in runs))
        for name, runs in samples.items()
    }
    results["bare orjson decode+encode"] = measure([[PY, "-c", bare, str(path)]], env, 3)
    # What the save that folds the change log in costs (once the log outgrows 1/8 of
    # the file): the file and its index rewritten whole.
    results["add, folding the log in"] = measure(
        [[PY, "-c", FOLD, str(path), str(ROOT / "src")]], env, min(repeat, 3)
    )
    show = results["show"][0]
    print(
        f"\n## {shape}, {n:,} nodes, {size / 1e6:.0f} MB "
        f"(first save by loom, converting it: {first:.2f} s, {first_peak} MB)"
    )
    print(f"{'command':<28}{'median':>10}{'peak':>9}{'÷ show':>9}{'÷ bare':>9}")
    bare_t = results["bare orjson decode+encode"][0]
    for name, (secs, peak) in results.items():
        print(
            f"{name:<28}{secs * 1000:>8.0f}ms{peak:>6} MB{secs / show:>9.2f}{secs / bare_t:>9.2f}"
        )
    return results


def portable(path: Path) -> None:
    """The 1M-node file read by tools that know nothing of loom."""
    readers = {
        "python json": [
            PY,
            "-c",
            "import json,sys; d=json.load(open(sys.argv[1])); print(len(d['nodes']))",
        ],
        "orjson": [
            PY,
            "-c",
            "import orjson,sys; print(len(orjson.loads(open(sys.argv[1],'rb').read())['nodes']))",
        ],
    }
    if shutil.which("jq"):
        readers["jq"] = ["jq", ".nodes | length"]
    if shutil.which("node"):
        readers["node"] = [
            "node",
            "-e",
            "console.log(Object.keys(JSON.parse(require('fs').readFileSync(process.argv[1]))['nodes']).length)",
        ]
    for name, cmd in readers.items():
        start = time.perf_counter()
        out = subprocess.run([*cmd, str(path)], capture_output=True, text=True)
        ok = out.returncode == 0 and out.stdout.strip().isdigit()
        print(
            f"  {name:<12} {'reads it' if ok else 'FAILS'}: {out.stdout.strip() or out.stderr.strip()[:80]} nodes ({time.perf_counter() - start:.1f} s)"
        )


FOLD = """
import sys
sys.path.insert(0, sys.argv[2])
import loom
from loom import ops, store
store.LOG_MIN, store.LOG_SHARE = 0, 1 << 40  # this save rewrites the file whole
with loom.edit(sys.argv[1]) as doc:
    ops.add_child(doc, doc.cursor_id, " folded", move_cursor=False)
"""

BULK = """
import sys, time
sys.path.insert(0, sys.argv[2])
import loom
from loom import journal, ops
n, nested = int(sys.argv[3]), sys.argv[4] == "nested"
with loom.edit(sys.argv[1]) as doc:
    root = doc.cursor_id
    if nested:
        with journal.transaction(doc, "bulk"):
            for i in range(n):
                ops.add_child(doc, root, f" child {i}", move_cursor=False)
    else:
        for i in range(n):
            ops.add_child(doc, root, f" child {i}", move_cursor=False)
"""


def bench_bulk(n: int, workdir: Path) -> None:
    print(
        f"\n## {n:,} adds under one parent in one `loom.edit` block (whole process, save included)"
    )
    env = {**os.environ, "LOOM_HOME": str(workdir / "home")}
    for mode in ("each its own undo step", "nested"):
        path = workdir / f"bulk-{mode[:4]}.loom.json"
        subprocess.run(
            [PY, "-m", "loom", "new", str(path), "--text", "root"],
            env={**env, "PYTHONPATH": str(ROOT / "src")},
            check=True,
            capture_output=True,
        )
        secs, peak = run(
            [
                PY,
                "-c",
                BULK,
                str(path),
                str(ROOT / "src"),
                str(n),
                "nested" if mode == "nested" else "flat",
            ],
            env,
        )
        print(f"  {mode:<26} {secs:6.2f} s  {peak} MB  (target ≤ 5 s)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--bulk", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if args.bulk:
            bench_bulk(args.bulk, workdir)
        for n in args.sizes:
            for shape in shapes.SHAPES if n <= 200_000 else ("bushy",):
                bench_shape(n, shape, workdir, args.repeat)
                if n >= 1_000_000:
                    print("\nthe 1M-node file, read by tools that know nothing of loom:")
                    portable(workdir / f"{shape}-{n}.loom.json")
                (workdir / f"{shape}-{n}.loom.json").unlink()


if __name__ == "__main__":
    main()
