"""`loom mcp`: a Model Context Protocol server over loom's library (the `mcp` extra).

Tools mirror the library (open or create a document, show, children, tree, add,
edit, split, merge, move, archive, generate, say, navigate, bookmark, tag, search,
undo/redo, import/export, list_models) and answer with the CLI's JSON shapes;
resources expose documents and nodes. Every path is confined to the directories the
user allows (`roots`). Transports: stdio, or streamable HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable, Iterator, Sequence

from loom.errors import ConfigError


def _sdk() -> None:
    try:
        import mcp.server.mcpserver  # noqa: F401
    except ImportError:
        raise ConfigError("loom mcp needs the mcp extra: pip install 'loom-weave[mcp]'") from None


def run_stdio(folders: Sequence[str]) -> None:
    """Serve over standard input and output until the client closes them."""
    _sdk()
    from loom.generation.backends import BackendPool
    from loom.mcp.roots import Roots
    from loom.mcp.server import build

    roots = Roots(folders)

    async def main() -> None:
        pool = BackendPool()
        try:
            await build(roots, pool).run_stdio_async()
        finally:
            await pool.aclose()

    asyncio.run(main())


def run_http(
    folders: Sequence[str], sock: socket.socket, ready: Callable[[], None] | None = None
) -> None:
    """Serve streamable HTTP at /mcp on `sock` until SIGINT, SIGTERM or SIGHUP."""
    _sdk()
    import uvicorn

    from loom.generation.backends import BackendPool
    from loom.mcp.roots import Roots
    from loom.mcp.server import build

    roots = Roots(folders)
    pool = BackendPool()
    app = build(roots, pool).streamable_http_app()
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # stopped by the handlers below, without re-raising the signal

    server = Server(config)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def stop() -> None:
            server.force_exit = server.should_exit
            server.should_exit = True

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, stop)
        if ready is not None:
            ready()
        try:
            await server.serve(sockets=[sock])
        finally:
            await pool.aclose()

    asyncio.run(main())
