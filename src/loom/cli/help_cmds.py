"""Learning loom from the command line: `loom guide` and `loom schema`."""

from __future__ import annotations

import click

from loom import payloads
from loom.cli.common import command, emit, json_mode, out
from loom.cli.main import cli


def guide_text() -> str:
    from importlib import resources

    return resources.files("loom").joinpath("data", "guide.md").read_text("utf-8")


@command(cli, "guide")
def guide_cmd() -> None:
    """A short manual: how loom thinks, the ten commands of daily weaving, scripting, JSON.

    Written for a newcomer and for an agent driving loom from a shell: read it
    once, then `loom COMMAND --help` for the details of one command.

    \b
    Examples:
      loom guide | less
      loom guide --json | jq -r .text
    """
    text = guide_text()
    if json_mode():
        emit("guide", text=text)
    else:
        out(text.rstrip("\n"))


@command(cli, "schema")
@click.argument("name", nargs=-1, metavar="[COMMAND]")
def schema_cmd(name: tuple[str, ...]) -> None:
    """Print the JSON Schema of loom's --json answers (of one COMMAND's, with the error object).

    Every `loom COMMAND --json` prints one object on stdout, success or failure;
    this is its exact reference (JSON Schema 2020-12, contract version 1).

    \b
    Examples:
      loom schema show
      loom schema models add
      loom schema | jq '.["$defs"].Node'
    """
    chosen = payloads.schema(" ".join(name) if name else None)
    if json_mode():
        emit("schema", version=payloads.VERSION, schema=chosen)
    else:
        import json

        out(json.dumps(chosen, indent=2, ensure_ascii=False))
