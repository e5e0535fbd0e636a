"""Generation overhead against a local fake provider (a real HTTP server on 127.0.0.1).

(a) N=16 branches with a fixed 200 ms server latency: loom's wall time as a ratio to one
    request's latency, both through the library (engine) and the whole `loom gen` process
    (whose ratio is to latency + process start, measured in the same run);
    with `n` (one request) and without it (16 concurrent requests).
(c) Whole-process overhead of `loom gen` against a zero-latency server, as a ratio to
    `python -c pass` and to `loom show` on the same document.

    python bench/bench_generate.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from loom.config import ModelConfig  # noqa: E402
from loom.generation.backends.openai_compat import OpenAICompletions  # noqa: E402
from loom.generation.engine import Branch, run_branches  # noqa: E402

from fakeprovider import FakeProvider  # noqa: E402

LATENCY = 0.2


def median_time(fn: object, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def library_fanout(url: str, n: int, use_n: bool) -> float:
    model = ModelConfig(name="fake", provider="openai", model="m", base_url=url, kind="base")
    caps = None if use_n else {"n": False}

    async def once() -> None:
        backend = OpenAICompletions(url, api_key="k", model="m", capabilities=caps)
        branches = [Branch(model=model, params={"max_tokens": 8}) for _ in range(n)]
        try:
            outcomes = await run_branches(
                "Once upon a time", branches, {"fake": backend}, concurrency=16
            )
        finally:
            await backend.aclose()
        assert all(o.ok for o in outcomes), [o.error for o in outcomes]

    return median_time(lambda: asyncio.run(once()), 5)


def user_env() -> dict[str, str]:
    """The environment a user has: bytecode caches written and used (some sandboxes turn them off)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def process_time(args: list[str], env: dict[str, str], repeat: int, cwd: Path) -> float:
    def run() -> None:
        subprocess.run(
            args, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    run()  # warm-up: bytecode caches, page cache
    return median_time(run, repeat)


def main() -> None:
    py = sys.executable
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeProvider(latency=LATENCY) as slow,
        FakeProvider() as fast,
    ):
        work = Path(tmp)
        env = {**user_env(), "LOOM_HOME": str(work / "home"), "PYTHONPATH": str(ROOT / "src")}
        loom = [py, "-m", "loom"]
        doc = ["-f", str(work / "b.loom.json")]
        subprocess.run(
            [*loom, "new", str(work / "b.loom.json"), "--text", "Once upon a time"],
            env=env,
            check=True,
            capture_output=True,
        )
        for name, server in (("slow", slow), ("fast", fast)):
            subprocess.run(
                [
                    *loom,
                    "models",
                    "add",
                    name,
                    "--provider",
                    "openai",
                    "--base-url",
                    server.openai_url,
                    "--model",
                    "m",
                    "--kind",
                    "base",
                ],
                env=env,
                check=True,
                capture_output=True,
            )

        print(f"## (a) N=16 at {LATENCY * 1000:.0f} ms server latency")
        with_n = library_fanout(slow.openai_url, 16, use_n=True)
        without_n = library_fanout(slow.openai_url, 16, use_n=False)
        start = process_time([py, "-c", "pass"], env, 5, work)
        whole = process_time(
            [*loom, "gen", "-n", "16", "-m", "slow", "--max-tokens", "8", *doc], env, 5, work
        )
        print(
            f"library, one request with n=16:     {with_n * 1000:7.1f} ms = {with_n / LATENCY:.2f}x latency"
        )
        print(
            f"library, 16 concurrent requests:    {without_n * 1000:7.1f} ms = {without_n / LATENCY:.2f}x latency"
        )
        print(
            f"`loom gen -n 16` whole process:     {whole * 1000:7.1f} ms = {whole / (LATENCY + start):.2f}x (latency + python start {start * 1000:.0f} ms)"
        )

        print("\n## (c) whole-process overhead of `loom gen` against a zero-latency server")
        show = process_time([*loom, "show", *doc], env, 9, work)
        gen1 = process_time(
            [*loom, "gen", "-n", "1", "-m", "fast", "--max-tokens", "8", *doc], env, 9, work
        )
        print(f"python -c pass: {start * 1000:6.1f} ms")
        print(f"loom show:      {show * 1000:6.1f} ms ({show / start:.2f}x pass)")
        print(
            f"loom gen -n 1:  {gen1 * 1000:6.1f} ms ({gen1 / start:.2f}x pass, {gen1 / show:.2f}x show, +{(gen1 - show) * 1000:.0f} ms)"
        )
        # The target: N=16 within 1.3x of one request's latency plus the process's own start-up.
        start16 = LATENCY + gen1
        print(
            f"`loom gen -n 16` vs (latency + loom gen's own zero-latency process time): "
            f"{whole * 1000:.0f} / {start16 * 1000:.0f} ms = {whole / start16:.2f}x"
        )


if __name__ == "__main__":
    main()
