"""Chat weaving: `loom say` (a turn, then replies) and `loom reply` (more replies)."""

from __future__ import annotations

import sys
from typing import Any

import click

from loom.cli.common import command, doc_path, json_mode, read_text_input
from loom.cli.gen_cmds import (
    LiveView,
    generation_options,
    leave_ctrl_c_to_the_generation,
    render_generation,
    request_from_options,
)
from loom.cli.main import cli
from loom.generation.request import CONVERSATION_METHODS

CHAT_EMULATE = click.option(
    "--emulate",
    type=click.Choice(["auto", *CONVERSATION_METHODS]),
    default="auto",
    show_default=True,
    help="How the conversation is sent: chat messages, or a transcript for a raw model "
    "(auto: chat where the model takes messages).",
)


def _view() -> LiveView | None:
    return LiveView() if (sys.stderr.isatty() and not json_mode()) else None


@command(cli, "say")
@click.argument("text", required=False)
@click.option("--from-file", metavar="PATH", help="Read the turn from a file.")
@click.option(
    "--as-user-from",
    "as_user_from",
    metavar="NODE",
    help="Hand NODE's whole branch to the model as one user message (TEXT, if given, after it).",
)
@generation_options(cursor_default="first")
@CHAT_EMULATE
def say_cmd(
    text: str | None,
    from_file: str | None,
    as_user_from: str | None,
    emulate: str,
    **options: Any,
) -> None:
    """Add your turn (TEXT, or - for standard input) at the cursor, then N replies to it.

    The branch is a conversation: user and assistant turns (and `human`/`model` nodes,
    as user/assistant) become the messages, the document's system message first. Chat
    models get the messages; base models a transcript (`User: …\\n\\nAssistant:`). Each
    reply is an assistant node that records the conversation it answered. The cursor
    moves to the first reply (--cursor says otherwise), so the next `say` continues it.
    Takes every flag of `loom gen`: -n, several -m, sampler flags, presets, modulators.

    \\b
    Examples:
      loom say "What should the keeper do?"
      loom say -n 3 -m claude -t 0.9 "Tell me more."
      echo "Summarise this." | loom say - --as-user-from a1b2
      loom say -m local --emulate transcript "Hi"   # a base model plays the assistant
    """
    from loom.chat import say

    typed = None if (text is None and from_file is None) else read_text_input(text, from_file)
    if typed is None and as_user_from is None:
        raise click.UsageError("missing TEXT: what to say ('-' for standard input)")
    request, raw, null = request_from_options(options, emulate=emulate)
    leave_ctrl_c_to_the_generation()
    result = say(
        doc_path(),
        typed,
        request,
        _view(),
        parent=as_user_from,
        as_user=as_user_from is not None,
    )
    render_generation(result, raw, null, "say")


@command(cli, "reply")
@click.argument("node", required=False, metavar="[NODE]")
@generation_options()
@CHAT_EMULATE
def reply_cmd(node: str | None, emulate: str, **options: Any) -> None:
    """N more replies to the conversation ending at NODE (default: the cursor).

    On a user turn: new assistant replies, siblings of any it already has. On an
    assistant turn: the assistant continues that turn (where the model can continue a
    message, else through a transcript). Takes every flag of `loom gen`.

    \\b
    Examples:
      loom reply                # two more answers to the question at the cursor
      loom reply a1b2 -n 4 -m claude -m local
    """
    from loom.generation.core import generate

    request, raw, null = request_from_options(options, node=node, mode="chat", emulate=emulate)
    leave_ctrl_c_to_the_generation()
    render_generation(generate(doc_path(), request, _view()), raw, null, "reply")
