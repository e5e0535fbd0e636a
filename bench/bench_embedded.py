"""Tokens/s through loom's EmbeddedLlama vs raw xllamacpp: same model, prompt, params, threads.

Both servers are loaded in the same process and measured in alternating rounds, so
machine noise hits both alike. Also prints the cold numbers: xllamacpp import time,
server start, and the first-token latency of a fresh EmbeddedLlama. Without
--threads, loom runs at its default (`default_threads()`: the physical cores this
process may use, less one), and raw llama.cpp is first swept over every thread
count up to the CPUs available, to show the best raw setting on this machine.

    python bench/bench_embedded.py [--threads N] [--tokens 128] [--rounds 5] [--n 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loom.generation.backends.base import GenRequest
from loom.generation.backends.embedded import (
    EmbeddedLlama,
    available_cores,
    default_threads,
    ensure_default_model,
)

PROMPT = "The history of the lighthouse keepers of the northern coast begins"
CTX_PER_SEQ = 2048
N_PARALLEL = 4


def cold_import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import xllamacpp; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def raw_server(model: Path, threads: int, sock_dir: str) -> Any:
    """What EmbeddedLlama configures, written out by hand against xllamacpp."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.n_parallel = N_PARALLEL
    params.n_ctx = CTX_PER_SEQ * N_PARALLEL
    params.n_batch = params.n_ubatch = 256
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads
    params.verbosity = 0
    params.warmup = False
    params.fit_params = False
    params.n_threads_http = 1
    params.hostnames = [os.path.join(sock_dir, "s.sock")]
    params.api_keys = [secrets.token_urlsafe(16)]
    return xllamacpp.Server(params)


def body(tokens: int, n: int, seed: int) -> dict[str, Any]:
    # ignore_eos fixes the token count, so both sides do identical work.
    return {"max_tokens": tokens, "temperature": 0.8, "seed": seed, "ignore_eos": True, "n": n}


def run_raw(server: Any, tokens: int, n: int, seed: int) -> tuple[int, float]:
    count = 0

    def on_chunk(data: dict[str, Any]) -> bool:
        nonlocal count
        for choice in data.get("choices") or []:
            if choice.get("text"):
                count += 1
        return False

    start = time.perf_counter()
    request = {"prompt": PROMPT, "stream": True, **body(tokens, n, seed)}
    server.handle_completions(request, on_chunk)
    return count, time.perf_counter() - start


async def run_loom(backend: EmbeddedLlama, tokens: int, n: int, seed: int) -> tuple[int, float]:
    params = body(tokens, n, seed)
    del params["n"]
    request = GenRequest(model="m", prompt=PROMPT, n=n, params=params)
    count = 0
    start = time.perf_counter()
    async for chunk in backend.stream(request):
        if chunk.text:
            count += 1
    return count, time.perf_counter() - start


async def sweep_raw(model: Path, cpus: int, tokens: int, n: int) -> None:
    """Raw llama.cpp at each thread count, three rounds each: the best setting here."""
    print(f"raw sweep    threads 1..{cpus}, n={n}, tokens={tokens} (median of 3 rounds)")
    for threads in range(1, cpus + 1):
        with tempfile.TemporaryDirectory(prefix="loom-bench-") as sock_dir:
            raw = await asyncio.to_thread(raw_server, model, threads, sock_dir)
            run_raw(raw, 4, 1, 0)
            rates = []
            for i in range(3):
                count, seconds = await asyncio.to_thread(run_raw, raw, tokens, n, i)
                rates.append(count / seconds)
            del raw
        print(f"  threads={threads}  {statistics.median(rates):8.1f} tok/s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="default: loom's default")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=1, help="branches per request")
    args = parser.parse_args()

    model = ensure_default_model()
    print(f"model        {model} ({model.stat().st_size / 2**20:.1f} MiB)")
    print(f"import       xllamacpp: {cold_import_seconds() * 1000:.0f} ms")

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"machine      {cpus} CPUs available, {available_cores()} physical cores; "
        f"loom's default: {default_threads()} thread(s)"
    )
    if args.threads is None:
        await sweep_raw(model, cpus or 1, args.tokens, args.n)
    backend = EmbeddedLlama(
        model, threads=args.threads, n_parallel=N_PARALLEL, ctx_per_seq=CTX_PER_SEQ
    )
    args.threads = backend.threads
    start = time.perf_counter()
    first = None
    async for _ in backend.stream(GenRequest(model="m", prompt=PROMPT, params={"max_tokens": 1})):
        first = first or time.perf_counter() - start
    print(f"cold start   loom first token: {first:.2f} s (model load + prompt + 1 token)")

    sock_dir = tempfile.TemporaryDirectory(prefix="loom-bench-")
    start = time.perf_counter()
    raw = await asyncio.to_thread(raw_server, model, args.threads, sock_dir.name)
    print(f"raw start    xllamacpp.Server(): {time.perf_counter() - start:.2f} s")
    run_raw(raw, 4, 1, 0)  # warm both the same way

    loom_rates, raw_rates = [], []
    for i in range(args.rounds):
        for side in ("loom", "raw") if i % 2 == 0 else ("raw", "loom"):  # no order bias
            if side == "loom":
                count, seconds = await run_loom(backend, args.tokens, args.n, seed=i)
                loom_rates.append(count / seconds)
            else:
                count, seconds = await asyncio.to_thread(run_raw, raw, args.tokens, args.n, i)
                raw_rates.append(count / seconds)
    loom_tps, raw_tps = statistics.median(loom_rates), statistics.median(raw_rates)
    print(
        f"throughput   threads={args.threads} n={args.n} tokens={args.tokens} "
        f"rounds={args.rounds} (median tokens/s, all branches)"
    )
    print(f"  loom       {loom_tps:8.1f} tok/s   {[round(r, 1) for r in loom_rates]}")
    print(f"  raw        {raw_tps:8.1f} tok/s   {[round(r, 1) for r in raw_rates]}")
    print(f"  ratio      {loom_tps / raw_tps:8.3f}x  (target >= 0.9x)")
    await backend.aclose()
    del raw
    sock_dir.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
