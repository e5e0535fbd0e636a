"""`loom serve` overhead per request against calling the model directly, in the same run.

(a) An HTTP model (the local fake provider, no latency): the official OpenAI client asks
    the provider itself, then the same through `loom serve` (which adds emulation
    planning, cleanup, the record of token probabilities, and a second HTTP hop).
    Whole and streamed; medians of interleaved requests.
(b) The embedded model: `loom.agenerate` with a kept `BackendPool` (the library, the
    model loaded once) against the same generation through `loom serve`.

    python bench/bench_serve.py
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import openai  # noqa: E402

import loom  # noqa: E402

from fakeprovider import FakeProvider  # noqa: E402

ROUNDS = 40
EMBEDDED_ROUNDS = 12
PROMPT = "The lighthouse keeper woke to find the sea gone."


def medians(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each function, interleaved so drift hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for fn in runs.values():
        fn()  # warm-up: connections, caches, a loaded model
    for _ in range(rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def start_server(env: dict[str, str], cwd: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "loom", "serve", "--port", "0", "--json", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"loom serve did not start: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
    return proc, json.loads(line)["url"]


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=60)


def report(title: str, direct: float, served: float) -> None:
    print(
        f"{title:<34} direct {direct * 1000:7.2f} ms   served {served * 1000:7.2f} ms   "
        f"overhead {(served - direct) * 1000:+7.2f} ms ({served / direct:.2f}x)"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, FakeProvider() as fake:
        work = Path(tmp)
        env = {
            **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
            "LOOM_HOME": str(work / "home"),
            "PYTHONPATH": str(ROOT / "src"),
        }
        subprocess.run(
            [sys.executable, "-m", "loom", "models", "add", "base", "--provider", "openai",
             "--base-url", fake.openai_url, "--model", "m", "--kind", "base"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        proc, url = start_server(env, work, "-m", "base", "-m", "embedded")
        try:
            direct = openai.OpenAI(base_url=fake.openai_url, api_key="k", max_retries=0)
            served = openai.OpenAI(base_url=url, api_key="k", max_retries=0)

            def whole(client: openai.OpenAI, model: str) -> Callable[[], object]:
                return lambda: client.completions.create(
                    model=model, prompt=PROMPT, n=4, max_tokens=16
                )

            def streamed(client: openai.OpenAI, model: str) -> Callable[[], object]:
                def run() -> None:
                    for _ in client.completions.create(
                        model=model, prompt=PROMPT, n=4, max_tokens=16, stream=True
                    ):
                        pass

                return run

            print(f"## (a) an HTTP model (fake provider, no latency), n=4, median of {ROUNDS}")
            m = medians(
                {
                    "direct": whole(direct, "m"),
                    "served": whole(served, "base"),
                    "direct_stream": streamed(direct, "m"),
                    "served_stream": streamed(served, "base"),
                },
                ROUNDS,
            )
            report("whole answer", m["direct"], m["served"])
            report("streamed (SSE)", m["direct_stream"], m["served_stream"])

            print(f"\n## (b) the embedded model, n=2, 16 tokens, median of {EMBEDDED_ROUNDS}")
            os.environ["LOOM_HOME"] = env["LOOM_HOME"]
            request = loom.GenerationRequest(
                n=2,
                models=("embedded",),
                params={"max_tokens": 16, "seed": 1},
                context=loom.Context.of_text(PROMPT),
            )
            loop = asyncio.new_event_loop()
            pool = loom.BackendPool()

            def library() -> None:
                loop.run_until_complete(loom.agenerate(None, request, backends=pool)).check()

            def through_serve() -> None:
                served.completions.create(
                    model="embedded", prompt=PROMPT, n=2, max_tokens=16, seed=1
                )

            try:
                e = medians({"library": library, "served": through_serve}, EMBEDDED_ROUNDS)
            finally:
                loop.run_until_complete(pool.aclose())
                loop.close()
            report("library vs served", e["library"], e["served"])
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
