"""The `loom` entry point: the command group and the one place errors become output.

Exit codes: 0 success, 1 a user or data error (LoomError), 2 a usage error,
70 an internal error (a bug), 130 interrupted.
Errors are one line on stderr; with --json the error object also goes to stdout, so
stdout holds exactly one JSON object whatever happened.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from loom import __version__, jsonio
from loom.cli.common import diagnostic, fields_option, file_option, json_option
from loom.errors import LoomError

# Which module defines each command. A command's module is imported only when that
# command runs, so `loom show` never loads generation.
COMMANDS: dict[str, tuple[str, ...]] = {
    "loom.cli.docs_cmds": ("new", "use", "info", "set", "check"),
    "loom.cli.read_cmds": ("show", "ls", "tree", "search"),
    "loom.cli.nav_cmds": ("goto", "up", "down", "next", "prev", "root"),
    "loom.cli.edit_cmds": ("add", "edit", "split", "merge", "mv", "rm", "restore", "purge"),
    "loom.cli.mark_cmds": ("bookmark", "tag", "note"),
    "loom.cli.history_cmds": ("history", "undo", "redo", "log"),
    "loom.cli.gen_cmds": (
        "gen",
        "regen",
        "params",
        "presets",
        "alts",
        "probe",
        "models",
        "recover",
    ),
    "loom.cli.chat_cmds": ("say", "reply"),
    "loom.cli.interop_cmds": ("import", "export", "ingest"),
    "loom.cli.sync_cmds": ("sync",),
    "loom.cli.tui_cmds": ("tui",),
    "loom.cli.server_cmds": ("serve", "mcp"),
    "loom.cli.help_cmds": ("guide", "schema"),
}
_MODULE_OF = {name: module for module, names in COMMANDS.items() for name in names}
# The order `loom --help` lists them in: by what a person does, not by module.
HELP_ORDER = (
    "guide", "new", "use", "info", "set", "add", "show", "sync", "ls", "tree", "goto", "up", "down", "next",
    "prev", "root", "edit", "split", "merge", "mv", "rm", "restore", "purge", "bookmark",
    "tag", "note", "search", "history", "undo", "redo", "log", "check",
    "gen", "regen", "say", "reply", "recover", "params", "presets", "alts", "probe", "models",
    "import", "export", "ingest", "tui", "serve", "mcp", "schema",
)  # fmt: skip


class LoomGroup(click.Group):
    """Loads command modules on demand and lists commands grouped by purpose."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(HELP_ORDER)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Each command with the whole first sentence of its help, wrapped, never cut."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _MODULE_OF:
            import importlib

            importlib.import_module(_MODULE_OF[cmd_name])  # registers its commands on `cli`
        return self.commands.get(cmd_name)


@click.group(
    cls=LoomGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "-V", "--version", prog_name="loom")
@file_option
@json_option
@fields_option
def cli() -> None:
    """Weave trees of text with language models.

    A document is a forest of nodes; each node holds a segment of text and the
    full text of a node is its ancestors' segments joined. Commands act on the
    current node (the cursor) unless given a NODE: a full id, any unique prefix
    of one, or @ for the cursor.

    \b
    Quick start:
      loom new story.loom.json --text "The lighthouse keeper"
      loom add " woke to find the sea gone."
      loom gen -n 3           # three continuations from a model
      loom tree               # see the branches
      loom show --raw | wc -w # the current branch as plain text

    New here? `loom guide` explains loom in a few pages. Every command takes
    -f FILE and --json (one JSON object on stdout, an error too; `loom schema`
    is its reference); `loom COMMAND --help` has examples.
    """


def _wants_json(argv: list[str]) -> bool:
    return any(a == "--json" or a == "--fields" or a.startswith("--fields=") for a in argv)


def _fail(
    argv: list[str], code: str, message: str, exit_code: int, details: dict[str, Any] | None = None
) -> int:
    """Report an error: one line on stderr, and with --json the error object on stdout."""
    diagnostic("error", message)
    sys.stderr.flush()
    if _wants_json(argv):
        from loom import payloads

        try:
            sys.stdout.buffer.write(jsonio.dump_line(payloads.error(code, message, details)))
            sys.stdout.flush()
        except (BrokenPipeError, _PipeClosed):
            # Nobody reads the answer; the exit code still tells. Keep the final flush quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return exit_code


class _PipeClosed(Exception):
    """The reader of our stdout went away. Not an OSError, so click does not turn it into exit 1."""


class _OutputFailed(Exception):
    """Writing to stdout failed (a full disk, an I/O error): the environment's fault, not a bug."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class _GuardedStream:
    """Wraps stdout (and its byte buffer) so a closed pipe surfaces as _PipeClosed and
    any other failed write as _OutputFailed."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, data: Any) -> int:
        try:
            return int(self._stream.write(data))
        except (BrokenPipeError, _PipeClosed):
            raise _PipeClosed from None
        except OSError as exc:
            raise _OutputFailed(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (BrokenPipeError, _PipeClosed):
            raise _PipeClosed from None
        except OSError as exc:
            raise _OutputFailed(exc) from None

    @property
    def buffer(self) -> _GuardedStream:
        return _GuardedStream(self._stream.buffer)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _undecodable_argument(args: list[str]) -> int | None:
    for i, arg in enumerate(args, 1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return i
    return None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        args = ["--help"]
    bad = _undecodable_argument(args)
    if bad is not None:
        return _fail(args, "bad_input", f"argument {bad} is not valid UTF-8 text", 1)
    if sys.stdout is None:  # started with stdout closed (`loom gen >&-`): output goes nowhere
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    original = sys.stdout
    sys.stdout = _GuardedStream(original)
    try:
        return _run(args)
    finally:
        sys.stdout = original


def _run(args: list[str]) -> int:
    try:
        code = cli.main(args=args, prog_name="loom", standalone_mode=False)
        sys.stdout.flush()  # a failed write surfaces here, not in the interpreter's last flush
        if isinstance(code, int):
            return code  # a command's click.exceptions.Exit, returned rather than raised here
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        return _fail(args, "usage", exc.format_message().replace("\n", " ") + hint, 2)
    except click.ClickException as exc:
        return _fail(args, "usage", exc.format_message().replace("\n", " "), 2)
    except LoomError as exc:
        return _fail(args, exc.code, exc.message, exc.exit_code, exc.details or None)
    except click.Abort:
        return _fail(args, "interrupted", "interrupted", 130)
    except KeyboardInterrupt:
        return _fail(args, "interrupted", "interrupted", 130)
    except (BrokenPipeError, _PipeClosed):
        # The reader went away (e.g. `loom show | head`); that is not an error. Point stdout at
        # /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except _OutputFailed as failed:
        from loom.files import reason

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _fail(args, "storage", f"cannot write the output ({reason(failed.error)})", 1)
    except Exception as exc:  # a bug, not a user error: one line, the details on request
        if os.environ.get("LOOM_DEBUG"):
            raise
        message = f"internal error: {type(exc).__name__}: {exc} (please report it; LOOM_DEBUG=1 shows the traceback)"
        return _fail(args, "internal", message, 70)
    return 0
