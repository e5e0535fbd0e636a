"""llama.cpp's own HTTP server (`llama-server`, as shipped in the xllamacpp wheel) in a child process.

For tests and benchmarks that need a real local OpenAI-compatible server, as a user would
run `llama-server -m model.gguf --host 127.0.0.1`:

    with LlamaServer(smollm2_path()) as server:
        httpx.get(server.url + "/models")  # owned_by: "llamacpp"

The child binds 127.0.0.1 on a port the OS picks, prints the address it listens on, and
exits when its stdin closes, so it never outlives the process that started it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType

__all__ = ["LlamaServer"]

READY_TIMEOUT = 120.0  # seconds to load a small model on a busy machine


class LlamaServer:
    """A llama.cpp server for `model_path` on 127.0.0.1; `url` ends in /v1 like an OpenAI base URL."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        alias: str = "local-model",
        slots: int = 2,
        ctx_per_slot: int = 1024,
        threads: int = 1,
    ) -> None:
        self.model_path = Path(model_path)
        self.alias = alias
        self.slots = slots
        self.ctx_per_slot = ctx_per_slot
        self.threads = threads
        self.address = ""  # http://127.0.0.1:PORT
        self._proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return self.address + "/v1"

    def start(self) -> LlamaServer:
        args = [
            sys.executable,
            __file__,
            str(self.model_path),
            self.alias,
            str(self.slots),
            str(self.ctx_per_slot),
            str(self.threads),
        ]
        self._proc = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line: list[str] = []
        assert self._proc.stdout is not None
        reader = threading.Thread(target=lambda: line.append(self._proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(READY_TIMEOUT)
        if not line or not line[0].startswith("http://"):
            self.stop()
            raise RuntimeError(f"llama.cpp server did not start: {''.join(line)}".strip())
        self.address = line[0].strip()
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()  # the child exits when its stdin closes
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _serve(model: str, alias: str, slots: int, ctx_per_slot: int, threads: int) -> None:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = model
    params.model_alias = {alias}
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # the OS picks a free port; printed below
    params.n_parallel = slots
    params.n_ctx = slots * ctx_per_slot
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.n_threads_http = 2
    params.verbosity = 0
    params.warmup = False
    server = xllamacpp.Server(params)
    print(server.listening_address, flush=True)
    sys.stdin.read()  # until the parent closes it (or dies)
    del server


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
