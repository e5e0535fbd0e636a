"""loom for other programs: `loom serve` (an OpenAI-compatible endpoint) and `loom mcp`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from loom.cli.common import command, emit, json_mode
from loom.cli.main import cli

KEY_ENV = "LOOM_SERVE_KEY"


@command(cli, "serve")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Any address but this machine's needs an API key.",
)
@click.option(
    "--port",
    "-p",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on (0: any free port, printed when ready).",
)
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    metavar="MODEL",
    help="Serve only these models (repeatable; default: every configured model). "
    "The first is the default for requests that name none.",
)
@click.option(
    "--record",
    "record",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Keep every request and its choices as a branch of this loom document "
    "(created if missing).",
)
@click.option(
    "--key-env",
    metavar="VAR",
    default=KEY_ENV,
    show_default=True,
    help="Environment variable holding the API key clients must send "
    "(`Authorization: Bearer KEY`); unset: no key on this machine's address.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Deadline for each request's generation (default: the model's, else 120).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every request to stderr.")
def serve_cmd(
    host: str,
    port: int,
    models: tuple[str, ...],
    record: str | None,
    key_env: str,
    timeout: float | None,
    verbose: bool,
) -> None:
    """Serve loom's models as an OpenAI-compatible API (needs the `serve` extra).

    POST /v1/completions takes a raw prompt and returns N continuations (`n`, `stop`,
    `max_tokens`, `temperature`, `top_p`, `seed`, `logprobs`, streaming), through any
    model loom knows: chat models continue the text through loom's base-model
    emulation and cleanup, so another loom (Loomsidian, Tapestry, MiniLoom, pyloom)
    pointed here weaves with them as if they were base models. POST
    /v1/chat/completions answers a conversation; GET /v1/models lists the model names.
    loom's other sampler names (top_k, min_p, repetition_penalty…), `presets` and
    `emulate` are accepted in the body too. A client that hangs up cancels its
    generation upstream. With --json, one line announces the URL when ready.

    \b
    Examples:
      loom serve                                # http://127.0.0.1:8000/v1, every model
      loom serve -m claude -m embedded --record served.loom.json
      LOOM_SERVE_KEY=s3cret loom serve --host 0.0.0.0 --port 9000
      curl -s localhost:8000/v1/completions -d '{"model": "claude", "prompt": "The sea", "n": 2}'
    """
    from loom import serve
    from loom.config import all_models, default_model_name

    known = all_models()
    missing = [m for m in models if m not in known]
    if missing:
        raise click.UsageError(f"unknown model {missing[0]!r} (known: {', '.join(sorted(known))})")
    served = list(dict.fromkeys(models)) if models else list(known)
    default = served[0] if models else default_model_name()
    if default not in served:
        default = served[0]
    api_key = os.environ.get(key_env) or None
    if not serve.is_loopback(host) and api_key is None:
        raise click.UsageError(
            f"--host {host} opens the server to other machines: set ${key_env} to an API key first"
        )
    path = None
    if record is not None:
        from loom.serve.recording import open_record

        path = open_record(Path(record))
    sock = serve.bind(host, port)
    url = serve.url_of(sock)

    def ready() -> None:
        if json_mode():
            emit(
                "serve",
                url=url,
                models=served,
                default=default,
                record=str(path) if path else None,
                auth=api_key is not None,
            )
        else:
            auth = "; clients must send the API key" if api_key else ""
            click.echo(
                f"loom serve: {url} (models: {', '.join(served)}; default {default}{auth}); "
                "Ctrl-C stops",
                err=True,
            )
        sys.stdout.flush()

    serve.run(
        sock,
        models=served,
        default=default,
        record=path,
        api_key=api_key,
        timeout=timeout,
        verbose=verbose,
        ready=ready,
    )


@command(cli, "mcp")
@click.option(
    "--root",
    "folders",
    multiple=True,
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="A directory the client may read and write (repeatable; default: the current one). "
    "Paths outside, through .. or a symlink, are refused.",
)
@click.option(
    "--http", "http", is_flag=True, help="Serve streamable HTTP on 127.0.0.1 instead of stdio."
)
@click.option(
    "--port",
    "-p",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port for --http (0: any free port, printed when ready).",
)
def mcp_cmd(folders: tuple[str, ...], http: bool, port: int) -> None:
    """Serve loom to an agent over the Model Context Protocol (needs the `mcp` extra).

    Tools mirror the library: open_document (or create), show, children, tree, add,
    edit (copy-on-write), split, merge, move, archive, navigate, bookmark, tag,
    search, undo, redo, generate and say (progress notifications carry each event
    as it streams), list_models, import_tree, export. Resources: loom://documents,
    loom://document/{file}, loom://node/{id}/{file}. Answers use the same JSON shapes
    as `--json`. The client can touch only files under the --root directories, and
    never sees API keys. stdio by default; --http serves http://127.0.0.1:PORT/mcp.

    \b
    Examples:
      loom mcp                                  # stdio, confined to the current directory
      loom mcp --root ~/stories --root /tmp/drafts
      loom mcp --http --port 8765               # streamable HTTP on 127.0.0.1
      claude mcp add loom -- loom mcp --root ~/stories
    """
    from loom import mcp

    roots = list(folders) or ["."]
    if not http:
        mcp.run_stdio(roots)
        return
    from loom import serve
    from loom.mcp.roots import Roots

    Roots(roots)  # a bad --root is named before anything listens
    sock = serve.bind("127.0.0.1", port)
    url = serve.url_of(sock).removesuffix("/v1") + "/mcp"

    def ready() -> None:
        if json_mode():
            emit("mcp", url=url, roots=[str(Path(r).resolve()) for r in roots])
        else:
            click.echo(f"loom mcp: {url} (roots: {', '.join(roots)}); Ctrl-C stops", err=True)
        sys.stdout.flush()

    mcp.run_http(roots, sock, ready)
