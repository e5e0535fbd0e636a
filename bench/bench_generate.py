"""Generation overhead against a local fake provider (a real HTTP server on 127.0.0.1).

(a) N=16 branches with a fixed 200 ms server latency: loom's wall time as a ratio to one
    request's latency, both through the library (`loom.agenerate`, no document) and the
    whole `loom gen` process (whose ratio is to latency + its own start-up, measured in the
    same run): one request with n=16, 16 concurrent requests (a model without `n`), and a
    16-child temperature sweep (16 distinct requests, the case that used to run in two waves).
(c) Whole-process overhead of `loom gen` against a zero-latency server, as a ratio to
    `python -c pass` and to `loom show` on the same document.

    python bench/bench_generate.py
"""

from __future__ import annotations

import asyncio
import dataclasses
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

import loom  # noqa: E402
from loom.generation.backends.openai_compat import OpenAICompletions  # noqa: E402

from fakeprovider import FakeProvider  # noqa: E402

LATENCY = 0.2


def median_time(fn: object, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def library_fanout(name: str, url: str, request: loom.GenerationRequest, use_n: bool) -> float:
    caps = None if use_n else {"n": False}
    context = loom.Context.of_text("Once upon a time")

    async def once() -> None:
        backend = OpenAICompletions(url, api_key="k", model="m", capabilities=caps)
        try:
            result = await loom.agenerate(None, request, backends={name: backend})
        finally:
            await backend.aclose()
        result.check()
        assert len(result.outcomes) == 16

    request = dataclasses.replace(request, context=context)
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
        cli = [py, "-m", "loom"]
        doc = ["-f", str(work / "b.loom.json")]
        subprocess.run(
            [*cli, "new", str(work / "b.loom.json"), "--text", "Once upon a time"],
            env=env,
            check=True,
            capture_output=True,
        )
        for name, server in (("slow", slow), ("fast", fast)):
            subprocess.run(
                [
                    *cli,
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
        os.environ["LOOM_HOME"] = env["LOOM_HOME"]  # the library run sees the same models
        plain = loom.GenerationRequest(n=16, models=("slow",), params={"max_tokens": 8})
        sweep = loom.GenerationRequest(
            n=16,
            models=("slow",),
            params={"max_tokens": 8},
            modulation={"sweep": "temperature=0.5:1.25"},
        )
        with_n = library_fanout("slow", slow.openai_url, plain, use_n=True)
        without_n = library_fanout("slow", slow.openai_url, plain, use_n=False)
        swept = library_fanout("slow", slow.openai_url, sweep, use_n=True)
        start = process_time([py, "-c", "pass"], env, 5, work)
        gen16 = [*cli, "gen", "-n", "16", "-m", "slow", "--max-tokens", "8", *doc]
        whole = process_time(gen16, env, 5, work)
        whole_sweep = process_time([*gen16, "--sweep", "temperature=0.5:1.25"], env, 5, work)
        print(
            f"library, one request with n=16:     {with_n * 1000:7.1f} ms = {with_n / LATENCY:.2f}x latency"
        )
        print(
            f"library, 16 concurrent requests:    {without_n * 1000:7.1f} ms = {without_n / LATENCY:.2f}x latency"
        )
        print(
            f"library, 16-child sweep:            {swept * 1000:7.1f} ms = {swept / LATENCY:.2f}x latency"
        )

        print("\n## (c) whole-process overhead of `loom gen` against a zero-latency server")
        show = process_time([*cli, "show", *doc], env, 9, work)
        gen1 = process_time(
            [*cli, "gen", "-n", "1", "-m", "fast", "--max-tokens", "8", *doc], env, 9, work
        )
        print(f"python -c pass: {start * 1000:6.1f} ms")
        print(f"loom show:      {show * 1000:6.1f} ms ({show / start:.2f}x pass)")
        print(
            f"loom gen -n 1:  {gen1 * 1000:6.1f} ms ({gen1 / start:.2f}x pass, {gen1 / show:.2f}x show, +{(gen1 - show) * 1000:.0f} ms)"
        )
        # The target: N=16 within 1.3x of one request's latency plus the process's own start-up.
        floor = LATENCY + gen1
        print(
            f"\n## (a) whole process against (latency + loom gen's own start-up = {floor * 1000:.0f} ms)"
        )
        print(
            f"`loom gen -n 16` (one request, n=16):  {whole * 1000:6.0f} ms = {whole / floor:.2f}x"
        )
        print(
            f"`loom gen -n 16 --sweep` (16 requests): {whole_sweep * 1000:6.0f} ms = {whole_sweep / floor:.2f}x"
            f" ({whole_sweep / whole:.2f}x the n=16 run)"
        )


if __name__ == "__main__":
    main()
