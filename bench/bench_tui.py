"""`loom tui` as a person meets it: whole process, on a real pseudo-terminal (80×24).

- first frame: from starting `loom tui -f FILE` to the document's text on screen, on 1k
  and 100k nodes; baselines from the same run: `python -c pass`, and `loom show` on the
  same file (what any loom command must pay to read it).
- keypress to repaint: a key is written to the terminal and the clock stops when the
  screen shows its effect (the status line's new depth), on a 100k-node document, a
  10,000-deep chain and, as the floor, a 1k-node one; also at a person's pace (saves in
  between), and while a generation streams 4 branches (a local fake provider, ~25
  tokens a second each).
- the TUI's own work per key, in process: the main thread's CPU time from a key to the
  repainted screen (what Textual really paints: the rows that changed), and, for scale,
  one full repaint of the screen.
- memory: peak RSS of `loom tui` on 100k nodes against `loom show`'s.

`--against DIR` measures another loom source tree (DIR/src, e.g. `git worktree add
/tmp/base main`) the same way in the same run, interleaved, and prints new ÷ baseline:
the machine may be loaded, so only ratios within one run compare. The load average is
printed at the start and the end.

    python bench/bench_tui.py                        # everything
    python bench/bench_tui.py --quick                # 1k and a 2,000-deep chain only
    python bench/bench_tui.py --against /tmp/base    # and the same on another tree
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import pty
import random
import re
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The loom to measure: this tree's, or another's in a child process (--against).
SRC = Path(os.environ.get("LOOM_BENCH_SRC") or ROOT / "src")
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(ROOT / "tests"))

from loom import store  # noqa: E402
from loom.document import Document  # noqa: E402

WORDS = ["the", "sea", "went", "out", "and", "did", "not", "come", "back", "for", "a", "long"]
ANSI = re.compile(
    rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][A-Za-z0-9]|\x1b[=>]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)"
)


def user_env(workdir: Path, src: Path = SRC) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "NO_COLOR")}
    return {
        **env,
        "LOOM_HOME": str(workdir / "home"),
        "LOOM_BENCH_SRC": str(src),
        "PYTHONPATH": str(src),
        "TERM": "xterm-256color",
        "COLUMNS": "80",
        "LINES": "24",
    }


# ---- documents ------------------------------------------------------------------------------


def tree_doc(n: int, seed: int = 1) -> dict[str, Any]:
    """Like bench_store's: deep branches with bursts of siblings, ~400 characters a node."""
    rng = random.Random(seed)
    doc = Document.new(title=f"bench {n}")
    nodes = doc.nodes
    ids = [f"n{i:011d}" for i in range(n)]
    parent: str | None = None
    for i, node_id in enumerate(ids):
        text = " " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 100)))
        rec: dict[str, Any] = {"text": text, "visited": True}
        if i % 2:
            rec["kind"] = "model"
            rec["meta"] = {"gen": {"model": "gemma-3-270m", "params": {"temperature": 0.9}}}
        if parent is not None:
            rec["parent"] = parent
            nodes[parent].setdefault("children", []).append(node_id)
            nodes[parent]["last_child"] = node_id
        else:
            doc.data["roots"].append(node_id)
        nodes[node_id] = rec
        parent = node_id if rng.random() < 0.7 else rng.choice(ids[: i + 1])
    # The cursor on the deepest node, so moving up is always possible.
    depth: dict[str, int] = {}
    for node_id in ids:
        p = nodes[node_id].get("parent")
        depth[node_id] = depth[p] + 1 if p else 0
    doc.data["cursor"] = max(ids, key=lambda i: depth[i])
    return doc.data


def chain_doc(n: int) -> dict[str, Any]:
    doc = Document.new(title=f"chain {n}")
    ids = [f"c{i:011d}" for i in range(n)]
    for i, node_id in enumerate(ids):
        rec: dict[str, Any] = {
            "text": f" sentence {i} of a long chain, the sea went out.",
            "visited": True,
        }
        if i:
            rec["parent"] = ids[i - 1]
        if i + 1 < n:
            rec["children"] = [ids[i + 1]]
            rec["last_child"] = ids[i + 1]
        doc.nodes[node_id] = rec
    doc.data["roots"] = [ids[0]]
    doc.data["cursor"] = ids[-1]
    return doc.data


def write(path: Path, data: dict[str, Any]) -> Path:
    """Saved as loom saves (so later loads trust it, as they trust what loom wrote)."""
    store.save(Document(data), path)
    return path


def build(kind: str, n: int, path: Path) -> Path:
    """Build a document in a child process: this one stays small, so the processes it
    starts do not inherit its memory high-water mark (ru_maxrss survives exec)."""
    subprocess.run([sys.executable, __file__, "--build", kind, str(n), str(path)], check=True)
    return path


# ---- a pseudo-terminal ------------------------------------------------------------------------


class Terminal:
    """`loom tui` on a pty of 80×24; reads everything it draws."""

    def __init__(self, path: Path, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loom", "tui", "-f", str(path)],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            close_fds=True,
            start_new_session=True,
        )
        os.close(slave)
        self.seen = b""

    def text(self) -> str:
        return ANSI.sub(b"", self.seen).decode("utf-8", "replace")

    def wait_for(self, pattern: str, timeout: float = 60.0) -> float:
        """Seconds until `pattern` (a regex) shows in what was drawn since the last call."""
        start = len(self.seen)
        deadline = time.perf_counter() + timeout
        compiled = re.compile(pattern)
        while time.perf_counter() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(self.master, 1 << 16)
                except OSError:
                    break
                self.seen += chunk
                if compiled.search(ANSI.sub(b"", self.seen[start:]).decode("utf-8", "replace")):
                    return time.perf_counter()
        raise RuntimeError(f"never saw {pattern!r}; last output: {self.text()[-400:]!r}")

    def drain(self, quiet: float = 0.3, most: float = 60.0) -> None:
        """Read until the app has drawn nothing for `quiet` seconds (or for `most` seconds:
        while branches stream, it never stops drawing)."""
        deadline = time.perf_counter() + most
        while time.perf_counter() < deadline:
            ready, _, _ = select.select([self.master], [], [], quiet)
            if not ready:
                return
            try:
                self.seen += os.read(self.master, 1 << 16)
            except OSError:
                return

    def key(self, data: bytes) -> float:
        sent = time.perf_counter()
        os.write(self.master, data)
        return sent

    def kill(self) -> None:
        """Stop the process whatever state it is in (a failed measurement leaves none behind)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            os.close(self.master)

    def quit(self) -> int:
        """Press q; the peak RSS of the process in KiB."""
        os.write(self.master, b"q")
        deadline = time.time() + 60
        while time.time() < deadline:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                return usage.ru_maxrss
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                with contextlib.suppress(OSError):
                    os.read(self.master, 1 << 16)
        self.proc.kill()
        raise RuntimeError("loom tui did not quit on q")


# ---- measurements ------------------------------------------------------------------------------


def timed(cmd: list[str], env: dict[str, str], repeat: int) -> tuple[float, int]:
    """Median wall time of a whole process (after one warm-up) and its peak RSS in KiB."""
    samples, rss = [], 0
    for i in range(repeat + 1):
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{cmd} failed")
        if i:
            samples.append(time.perf_counter() - start)
        rss = max(rss, usage.ru_maxrss)
    return statistics.median(samples), rss


def first_frame(path: Path, env: dict[str, str], repeat: int) -> tuple[float, int]:
    samples, rss = [], 0
    for i in range(repeat + 1):
        term = Terminal(path, env)
        try:
            seen = term.wait_for(r"depth \d+ · ")
            if i:
                samples.append(seen - term.started)
            term.drain()
            rss = max(rss, term.quit())
        finally:
            term.kill()
    return statistics.median(samples), rss


def depth_of(term: Terminal) -> int:
    found = re.findall(r"depth (\d+)", term.text())
    return int(found[-1])


def keypresses(
    path: Path, env: dict[str, str], rounds: int, *, pace: float = 0.0, stream: bool = False
) -> list[float]:
    """Milliseconds from writing a key to the screen showing its effect: h then l, repeated.

    `pace`: seconds between keys (a person reading as they go: saves run in between).
    `stream`: first start a generation (g) and measure while its branches stream.
    """
    term = Terminal(path, env)
    try:
        term.wait_for(r"depth \d+ · ")
        term.drain()
        depth = depth_of(term)
        if stream:
            term.key(b"g")
            term.wait_for(r"generating")
            term.drain(0.5, most=1.0)
        out = []
        for _ in range(rounds):
            for key, change in ((b"h", -1), (b"l", +1)):
                if pace:
                    time.sleep(pace)
                sent = term.key(key)
                depth += change
                shown = term.wait_for(rf"depth {depth} ")
                out.append((shown - sent) * 1000)
                term.drain(0.05, most=0.1)
        if stream and "✓" in term.text():  # a branch finished: the measure must be longer
            raise RuntimeError("the generation ended before the keys did")
        term.drain(most=1.0)
        term.quit()
    finally:
        term.kill()
    return out


def own_work(path: Path, rounds: int) -> dict[str, list[float]]:
    """In this process: per key (h, l through the app's bindings), the main thread's CPU
    milliseconds until the screen is repainted (Textual repaints what was refreshed); the
    same for a key bound to nothing (the floor: Textual's key handling and pilot's); and
    one repaint of the whole screen (every widget refreshed), for scale."""
    from loom.tui import make_app

    app = make_app(path)
    out: dict[str, list[float]] = {"keys": [], "floor": [], "full": []}

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.2)
            presses = [("floor", "f")] * (2 * rounds)  # first: no save is waiting then
            presses += [("keys", "h" if i % 2 == 0 else "l") for i in range(2 * rounds)]
            for name, key in presses:
                start = time.thread_time()
                await pilot.press(key)
                await pilot.pause(1 / 60)  # a frame: the screen's update timer runs
                out[name].append((time.thread_time() - start) * 1000)
            for _ in range(rounds):
                for widget in app.screen.walk_children():
                    widget.refresh()
                start = time.thread_time()
                app.screen._compositor.render_full_update()
                out["full"].append((time.thread_time() - start) * 1000)
            await app.wait_synced()

    asyncio.run(main())
    return out


def own_work_of(path: Path, rounds: int, src: Path) -> dict[str, list[float]]:
    """`own_work` in a child process running the loom at `src`."""
    env = {**os.environ, "LOOM_BENCH_SRC": str(src), "PYTHONPATH": str(src)}
    done = subprocess.run(
        [sys.executable, __file__, "--own-work", str(path), str(rounds)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def stats(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.9) - 1)], ordered[-1]


def row(name: str, samples: list[float], base: list[float] | None, floor: float | None) -> None:
    median, p90, worst = stats(samples)
    cols = f"{name:<44}{median:>8.1f}ms{p90:>8.1f}ms{worst:>8.1f}ms"
    cols += f"{median / floor:>7.2f}" if floor else f"{'–':>7}"
    if base is not None:
        cols += f"  ÷ base {median / stats(base)[0]:>5.2f} (base {stats(base)[0]:.1f}ms)"
    print(cols, flush=True)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def fake_models(env: dict[str, str], url: str) -> None:
    """A base model on the local fake provider as the default, long answers allowed."""
    loom_cmd = [sys.executable, "-m", "loom"]
    subprocess.run(
        [*loom_cmd, "models", "add", "fake", "--provider", "openai", "--base-url", url,
         "--model", "m", "--kind", "base", "--key-env", "NO_KEY_NEEDED",
         "--param", "max_tokens=4000", "--replace"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*loom_cmd, "models", "default", "fake"], env=env, check=True, capture_output=True
    )


def long_answer(request: Any, index: int) -> str:
    rng = random.Random(index)
    return "".join(" " + rng.choice(WORDS) for _ in range(1500))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--against", metavar="DIR", help="another loom tree to measure alike")
    parser.add_argument("--build", nargs=3, metavar=("KIND", "N", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--own-work", nargs=2, metavar=("PATH", "ROUNDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        kind, n, target = args.build
        write(Path(target), (tree_doc if kind == "tree" else chain_doc)(int(n)))
        return
    if args.own_work:
        print(json.dumps(own_work(Path(args.own_work[0]), int(args.own_work[1]))))
        return
    from fakeprovider import FakeProvider

    repeat = 2 if args.quick else 3
    rounds = 8 if args.quick else 15
    base_src = Path(args.against).resolve() / "src" if args.against else None
    print(f"bench_tui: {load()} on {os.cpu_count()} CPUs", flush=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeProvider(chunk_delay=0.01, generator=long_answer) as fake,
    ):
        work = Path(tmp)
        env = user_env(work)
        base_env = user_env(work, base_src) if base_src else None
        fake_models(env, fake.openai_url)
        docs = {"1k": build("tree", 1000, work / "b1k.loom.json")}
        chain = 2000 if args.quick else 10_000
        docs[f"chain {chain:,}"] = build("chain", chain, work / "chain.loom.json")
        if not args.quick:
            t0 = time.perf_counter()
            docs["100k"] = build("tree", 100_000, work / "b100k.loom.json")
            print(f"(built the 100k-node document in {time.perf_counter() - t0:.0f}s)")
        py = sys.executable

        def both(measure: Any) -> tuple[Any, Any]:
            """`measure(env)` for this tree, then for the baseline (None without one)."""
            new = measure(env)
            return new, (measure(base_env) if base_env is not None else None)

        print("\n## First painted frame (whole process, pty 80x24)")
        print(f"{'':<32}{'median':>10}{'÷ pass':>9}{'÷ show':>9}")
        base, _ = timed([py, "-c", "pass"], env, repeat)
        print(f"{'python -c pass':<32}{base * 1000:>8.1f}ms")
        memory: dict[str, tuple[int, int]] = {}
        for name in ("1k", "100k"):
            if name not in docs:
                continue
            show, show_rss = timed([py, "-m", "loom", "show", "-f", str(docs[name])], env, repeat)
            (tui, tui_rss), old = both(lambda e, name=name: first_frame(docs[name], e, repeat))
            memory[name] = (tui_rss, show_rss)
            print(f"{'loom show ' + name:<32}{show * 1000:>8.1f}ms{show / base:>9.2f}{1:>9.2f}")
            line = f"{'loom tui ' + name + ' first frame':<32}{tui * 1000:>8.1f}ms"
            line += f"{tui / base:>9.2f}{tui / show:>9.2f}"
            if old is not None:
                line += f"  ÷ base {tui / old[0]:.2f} (base {old[0] * 1000:.1f}ms)"
            print(line, flush=True)

        print("\n## Keypress to repaint (h/l, end to end through the pty; TEXTUAL_FPS=120)")
        print(f"{'':<44}{'median':>10}{'p90':>10}{'worst':>10}{'÷ 1k':>7}")
        floor = None
        for name in docs:
            new, old = both(lambda e, name=name: keypresses(docs[name], e, rounds))
            row(f"{name} nodes" if name == "1k" else name, new, old, floor)
            floor = floor or stats(new)[0]
        for name in docs:
            if name != "1k":
                new, old = both(
                    lambda e, name=name: keypresses(docs[name], e, max(3, rounds // 2), pace=0.4)
                )
                row(f"{name}, a key every 0.4 s (saves between)", new, old, floor)
        for name in docs:
            new, old = both(lambda e, name=name: keypresses(docs[name], e, rounds, stream=True))
            row(f"{name}, while 4 branches stream", new, old, floor)

        print("\n## The TUI's own work per key (in process: main-thread CPU, key to repaint)")
        print(f"{'':<44}{'median':>10}{'p90':>10}{'worst':>10}{'÷ 1k':>7}")
        floor = None
        measured = {}
        for name in docs:
            new = own_work_of(docs[name], rounds, SRC)
            old = own_work_of(docs[name], rounds, base_src) if base_src else None
            row(name, new["keys"], old["keys"] if old else None, floor)
            floor = floor or stats(new["keys"])[0]
            measured[name] = (new, old)
        for name, (new, old) in measured.items():
            row(f"{name}: a key bound to nothing (floor)", new["floor"], old and old["floor"], None)
        for name, (new, old) in measured.items():
            row(f"{name}: one whole-screen repaint", new["full"], old and old["full"], None)

        print("\n## Memory (peak RSS)")
        for name, (tui_rss, show_rss) in memory.items():
            print(
                f"{name}: loom tui {tui_rss / 1024:.0f} MB, loom show {show_rss / 1024:.0f} MB, "
                f"ratio {tui_rss / show_rss:.2f}"
            )
    print(f"\nbench_tui: {load()}")


if __name__ == "__main__":
    main()
