"""`loom tui` as a person meets it: whole process, on a real pseudo-terminal (80×24).

- first frame: from starting `loom tui -f FILE` to the document's text on screen, on 1k
  and 100k nodes; baselines from the same run: `python -c pass`, and `loom show` on the
  same file (what any loom command must pay to read it).
- keypress to repaint: a key is written to the terminal and the clock stops when the
  screen shows its effect (the status line's new depth), on a 100k-node document, a
  10,000-deep chain and, as the floor, a 1k-node one. Also keys pressed while a save of
  the 100k-node document is running.
- memory: peak RSS of `loom tui` on 100k nodes against `loom show`'s.

    python bench/bench_tui.py            # everything
    python bench/bench_tui.py --quick    # 1k and a 2,000-deep chain only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
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
sys.path.insert(0, str(ROOT / "src"))

from loom import store  # noqa: E402
from loom.document import Document  # noqa: E402

WORDS = ["the", "sea", "went", "out", "and", "did", "not", "come", "back", "for", "a", "long"]
ANSI = re.compile(
    rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[()][A-Za-z0-9]|\x1b[=>]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)"
)


def user_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "NO_COLOR")}
    return {
        **env,
        "LOOM_HOME": str(workdir / "home"),
        "PYTHONPATH": str(ROOT / "src"),
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
    depth = {}
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

    def drain(self, quiet: float = 0.3) -> None:
        """Read until the app has drawn nothing for `quiet` seconds."""
        while True:
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


def keypresses(path: Path, env: dict[str, str], rounds: int, *, pace: float = 0.0) -> list[float]:
    """Milliseconds from writing a key to the screen showing its effect: h then l, repeated.

    `pace`: seconds between keys (a person reading as they go: saves run in between).
    """
    term = Terminal(path, env)
    try:
        term.wait_for(r"depth \d+ · ")
        term.drain()
        depth = depth_of(term)
        out = []
        for _ in range(rounds):
            for key, change in ((b"h", -1), (b"l", +1)):
                if pace:
                    time.sleep(pace)
                sent = term.key(key)
                depth += change
                shown = term.wait_for(rf"depth {depth} ")
                out.append((shown - sent) * 1000)
                term.drain(0.05)
        term.drain()
        term.quit()
    finally:
        term.kill()
    return out


def in_process(path: Path, rounds: int) -> list[float]:
    """Milliseconds of the TUI's own work per key, in this process: the action (h or l)
    and a full repaint of every widget, without the terminal or Textual's frame timer."""
    from loom.tui import make_app

    app = make_app(path)
    out: list[float] = []

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            for i in range(2 * rounds):
                start = time.perf_counter()
                app.action_parent() if i % 2 == 0 else app.action_child()
                app._refresh_tree()
                app.screen._compositor.render_full_update()
                out.append((time.perf_counter() - start) * 1000)
                await pilot.pause()
            await app.wait_synced()

    asyncio.run(main())
    return out


def report_keys(name: str, samples: list[float], floor: float | None) -> float:
    median = statistics.median(samples)
    worst = max(samples)
    p90 = sorted(samples)[int(len(samples) * 0.9) - 1]
    ratio = f"{median / floor:>6.2f}" if floor else "     –"
    print(f"{name:<40}{median:>8.1f}ms{p90:>8.1f}ms{worst:>8.1f}ms {ratio}")
    return median


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--build", nargs=3, metavar=("KIND", "N", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build:
        kind, n, target = args.build
        write(Path(target), (tree_doc if kind == "tree" else chain_doc)(int(n)))
        return
    repeat = 2 if args.quick else 3
    rounds = 8 if args.quick else 15
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = user_env(work)
        docs = {"1k": build("tree", 1000, work / "b1k.loom.json")}
        chain = 2000 if args.quick else 10_000
        docs[f"chain {chain:,}"] = build("chain", chain, work / "chain.loom.json")
        if not args.quick:
            t0 = time.perf_counter()
            docs["100k"] = build("tree", 100_000, work / "b100k.loom.json")
            print(f"(built the 100k-node document in {time.perf_counter() - t0:.0f}s)")
        py = sys.executable

        print("\n## First painted frame (whole process, pty 80x24)")
        print(f"{'':<32}{'median':>10}{'÷ pass':>9}{'÷ show':>9}")
        base, _ = timed([py, "-c", "pass"], env, repeat)
        print(f"{'python -c pass':<32}{base * 1000:>8.1f}ms")
        memory: dict[str, tuple[int, int]] = {}
        for name in ("1k", "100k"):
            if name not in docs:
                continue
            show, show_rss = timed([py, "-m", "loom", "show", "-f", str(docs[name])], env, repeat)
            tui, tui_rss = first_frame(docs[name], env, repeat)
            memory[name] = (tui_rss, show_rss)
            print(f"{'loom show ' + name:<32}{show * 1000:>8.1f}ms{show / base:>9.2f}{1:>9.2f}")
            print(
                f"{'loom tui ' + name + ' first frame':<32}{tui * 1000:>8.1f}ms{tui / base:>9.2f}{tui / show:>9.2f}"
            )

        print("\n## Keypress to repaint (h/l, end to end through the pty; TEXTUAL_FPS=120)")
        print(f"{'':<40}{'median':>10}{'p90':>10}{'worst':>10}{'÷ 1k':>6}")
        floor = report_keys("1k nodes", keypresses(docs["1k"], env, rounds), None)
        for name in docs:
            if name != "1k":
                report_keys(name, keypresses(docs[name], env, rounds), floor)
        for name in docs:
            if name != "1k":
                report_keys(
                    f"{name}, a key every 0.4 s (saves between)",
                    keypresses(docs[name], env, max(3, rounds // 2), pace=0.4),
                    floor,
                )

        print("\n## The TUI's own work per key (in process: action + full repaint)")
        print(f"{'':<40}{'median':>10}{'p90':>10}{'worst':>10}{'÷ 1k':>6}")
        floor = report_keys("1k nodes", in_process(docs["1k"], rounds), None)
        for name in docs:
            if name != "1k":
                report_keys(name, in_process(docs[name], rounds), floor)

        print("\n## Memory (peak RSS)")
        for name, (tui_rss, show_rss) in memory.items():
            print(
                f"{name}: loom tui {tui_rss / 1024:.0f} MB, loom show {show_rss / 1024:.0f} MB, "
                f"ratio {tui_rss / show_rss:.2f}"
            )


if __name__ == "__main__":
    main()
