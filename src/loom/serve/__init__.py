"""`loom serve`: an OpenAI-compatible endpoint in front of every model loom knows.

    POST /v1/completions        a raw prompt in, N continuations out (streamed with SSE)
    POST /v1/chat/completions   a conversation in, N replies out
    GET  /v1/models             the models served (loom's model names)

Chat models answer completions through loom's base-model emulation and cleanup, so
another loom (Loomsidian, Tapestry, MiniLoom, pyloom) pointed at this server weaves
with them as if they were base models. Needs the `serve` extra (uvicorn).
`protocol` is the wire format, `app` the ASGI application, `recording` the
`--record` document.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from loom.errors import ConfigError, StorageError, UsageError

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port), or one clear error."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    try:
        return socket.create_server(address, family=family, backlog=256)
    except OSError as exc:
        raise StorageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


def run(
    sock: socket.socket,
    *,
    models: Sequence[str],
    default: str,
    record: Path | None = None,
    api_key: str | None = None,
    timeout: float | None = None,
    verbose: bool = False,
    ready: Callable[[], None] | None = None,
) -> None:
    """Serve on `sock` until SIGINT, SIGTERM or SIGHUP, then stop cleanly: requests get five
    seconds to finish, then their generations are cancelled (finished branches recorded)."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError(
            "loom serve needs the serve extra: pip install 'loom-weave[serve]'"
        ) from None
    from loom.serve.app import App, Service

    service = Service(models, default, record=record, api_key=api_key, timeout=timeout)
    config = uvicorn.Config(
        App(service),
        log_level="info" if verbose else "warning",
        access_log=verbose,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # loom's own handlers (below) stop it; uvicorn's would re-raise the signal

    server = Server(config)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def stop() -> None:
            server.force_exit = server.should_exit  # a second Ctrl-C stops waiting
            server.should_exit = True

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, stop)
        if ready is not None:
            ready()
        await server.serve(sockets=[sock])

    asyncio.run(main())
