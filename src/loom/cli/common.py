"""What every command shares: the -f/--json options, opening the document, and printing results."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from loom import jsonio, payloads, store, workspace
from loom.document import Document, Node
from loom.errors import BadInput
from loom.payloads import Fields

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """Options that may be given before or after the command name."""

    def __init__(self) -> None:
        self.file: str | None = None
        self.json: bool = False
        self.fields: Fields | None = None
        self.field_specs: list[str] = []


def state() -> State:
    ctx = click.get_current_context()
    root = ctx.find_root()
    if root.obj is None:
        root.obj = State()
    obj: State = root.obj
    return obj


def _set_file(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        state().file = value


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        state().json = True


def _set_fields(ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> None:
    if value:
        current = state()
        current.field_specs.extend(value)  # every --fields given, before or after the command
        current.fields = Fields.parse(",".join(current.field_specs))
        current.json = True


file_option = click.option(
    "-f",
    "--file",
    "file",
    metavar="FILE",
    expose_value=False,
    callback=_set_file,
    help="Document to use (default: $LOOM_FILE, else the last one used in this directory).",
)
json_option = click.option(
    "--json",
    "json_",
    is_flag=True,
    expose_value=False,
    callback=_set_json,
    help="Print one JSON object on stdout (an error too: see `loom guide`).",
)
fields_option = click.option(
    "--fields",
    metavar="LIST",
    multiple=True,
    expose_value=False,
    callback=_set_fields,
    help="Node fields in the JSON answer (implies --json): all, brief (no meta), or names "
    "such as id,text,children,meta.gen. Lists are brief by default.",
)


def command(group: click.Group, name: str, **kwargs: Any) -> Callable[[F], F]:
    """Register a command that accepts the common options anywhere on its command line."""

    def decorate(fn: F) -> F:
        cmd = group.command(name, **kwargs)(fields_option(json_option(file_option(fn))))
        return cmd  # type: ignore[return-value]

    return decorate


# ---- the document -----------------------------------------------------------------------


def doc_path() -> Path:
    return workspace.resolve_path(state().file)


def read_doc() -> Document:
    """Load the selected document for reading (no lock: saves are atomic renames)."""
    return store.load(doc_path())


@contextmanager
def write_doc() -> Iterator[Document]:
    """Lock, load, and save the selected document if the block changed it."""
    path = doc_path()
    with store.editing(path) as doc:
        yield doc
    workspace.remember(path)


# ---- output -----------------------------------------------------------------------------


def json_mode() -> bool:
    return state().json


def fields(*, listing: bool = False) -> Fields:
    """The node fields of this answer: --fields, else brief for lists and all for one node."""
    chosen = state().fields
    if chosen is not None:
        return chosen
    return payloads.BRIEF if listing else payloads.ALL


def emit(command: str, **payload: Any) -> None:
    """Print the answer of a command in --json mode: one object, one line, on stdout."""
    sys.stdout.buffer.write(jsonio.dump_line(payloads.answer(command, **payload)))
    sys.stdout.flush()


def out(text: str = "", *, nl: bool = True) -> None:
    sys.stdout.write(text + ("\n" if nl else ""))


# Control characters in a message (an imported id with a newline in it) are shown escaped, so
# one diagnostic is always one line and text from a file can never fake a "loom: note:" line.
# Bidirectional overrides and isolates are escaped too: they could reorder what a line shows.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update(
    {c: f"\\u{c:04x}" for c in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
)
_ESCAPES.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"})
_ONE_LINE = str.maketrans(_ESCAPES)


def one_line(message: str) -> str:
    """A message as loom prints it: one line, control characters escaped, secrets masked."""
    from loom.redact import mask_secrets  # only when something is printed

    return mask_secrets(message).translate(_ONE_LINE)


def diagnostic(kind: str, message: str) -> None:
    """Print `loom: KIND: message` (error, warning, note) on stderr, always as one line."""
    sys.stderr.write(f"loom: {kind}: {one_line(message)}\n")


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def color_enabled() -> bool:
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return stdout_is_terminal() or bool(os.environ.get("FORCE_COLOR"))


def style(text: str, **kwargs: Any) -> str:
    return click.style(text, **kwargs) if color_enabled() else text


def read_text_input(text: str | None, from_file: str | None, *, what: str = "text") -> str:
    """TEXT, '-' for standard input, or --from-file PATH; exactly one of them.

    Standard input loses exactly one final newline, as a shell's $(…) drops it:
    `echo " more" | loom add -` adds " more". A file is read as it is.
    """
    if text is not None and from_file is not None:
        raise click.UsageError(
            f"give the {what} either as an argument or with --from-file, not both"
        )
    if from_file is not None:
        try:
            return Path(from_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"cannot read {from_file}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise BadInput(f"{from_file} is not UTF-8 text (byte {exc.start})") from None
    if text == "-":
        data = sys.stdin.buffer.read()
        try:
            decoded = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(f"standard input is not UTF-8 text (byte {exc.start})") from None
        # `echo` ends what it prints with a newline nobody meant as text.
        return decoded.removesuffix("\n").removesuffix("\r") if decoded.endswith("\n") else decoded
    if text is None:
        raise click.UsageError(
            f"missing {what}: pass it as an argument, '-' for standard input, or --from-file PATH"
        )
    return text


# ---- shared arguments and output --------------------------------------------------------

NODE = click.argument("node", required=False, metavar="[NODE]")


def report(
    doc: Document,
    node: Node,
    verb: str,
    *,
    extra: dict[str, Any] | None = None,
    quiet_id: bool = False,
) -> None:
    """The common success output of commands that produce or move to a node."""
    if json_mode():
        emit(verb, node=payloads.node(node, fields()), **(extra or {}), cursor=doc.cursor_id)
    elif quiet_id or not stdout_is_terminal():
        out(node.id)
    else:
        from loom.cli import render

        short = doc.short_ids([node.id])[node.id]
        out(render.node_line(node, short, current=node.id == doc.cursor_id))
