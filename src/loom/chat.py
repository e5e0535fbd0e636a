"""Chat weaving: a branch as a conversation (docs/chat.md).

Every turn is a node: `say` adds the person's turn and generates N assistant replies as
its children; `reply` (a chat-mode `loom.generate`) asks for more replies to a turn, or
continues an assistant turn. The branch's turns become the messages
(`loom.generation.context.context_for`); chat models get them as they are and raw
models as a transcript; every reply records what it answered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from loom import ops, store
from loom.document import Document, Node
from loom.errors import UsageError
from loom.generation.context import TURN_KEY
from loom.generation.request import GenerationRequest

if TYPE_CHECKING:
    from loom.generation import events as ev
    from loom.generation.backends import BackendPool
    from loom.generation.backends.base import Backend
    from loom.generation.core import Generation

Target = Document | str | os.PathLike[str]


def add_turn(doc: Document, parent: str | None, text: str, role: str = "user") -> Node:
    """A new turn under `parent` (the cursor moves to it). Empty text is refused."""
    if role not in ("user", "system", "assistant"):
        raise UsageError(f"a turn's role is user, system or assistant, not {role!r}")
    if not text.strip():
        raise UsageError(f"nothing to say: the {role} turn is empty")
    return ops.add_child(doc, parent, text, kind=role, meta={TURN_KEY: True})


async def asay(
    target: Target,
    text: str | None,
    request: GenerationRequest | None = None,
    events: ev.Sink | None = None,
    *,
    parent: str | None = None,
    as_user: bool = False,
    backends: BackendPool | Mapping[str, Backend] | None = None,
) -> Generation:
    """Add the person's turn (`text`) under `parent` (default: the cursor), then generate
    replies to the conversation.

    `as_user`: the whole branch, whatever its roles, goes to the model as one user message
    (a text handed to a chat model); `text` may then be left out. The turn is saved before
    the model is asked, so a failing provider never costs the person their words.
    """
    from loom.generation.core import agenerate

    request = _request(request, text, as_user)
    turn = await _write_turn(target, parent, text)
    return await agenerate(
        target, _asked(request, turn, parent, as_user), events, backends=backends
    )


def say(
    target: Target,
    text: str | None,
    request: GenerationRequest | None = None,
    events: ev.Sink | None = None,
    *,
    parent: str | None = None,
    as_user: bool = False,
    backends: BackendPool | Mapping[str, Backend] | None = None,
) -> Generation:
    """`asay` for synchronous callers (Ctrl-C and SIGTERM keep finished replies, as in
    `loom.generate`)."""
    from loom.generation.core import generate, refuse_running_loop

    refuse_running_loop("loom.chat.say", "await loom.chat.asay(...)")
    request = _request(request, text, as_user)
    turn = asyncio.run(_write_turn(target, parent, text))
    return generate(target, _asked(request, turn, parent, as_user), events, backends=backends)


def _request(
    request: GenerationRequest | None, text: str | None, as_user: bool
) -> GenerationRequest:
    if text is None and not as_user:
        raise UsageError("nothing to say: give the text of the turn")
    return request or GenerationRequest()


def _asked(
    request: GenerationRequest, turn: Node | None, parent: str | None, as_user: bool
) -> GenerationRequest:
    """The generation a `say` makes: replies to the new turn (or to `parent`'s branch)."""
    node = turn.id if turn is not None else parent
    return dataclasses.replace(request, node=node, mode="as-user" if as_user else "chat")


async def _write_turn(target: Target, parent: str | None, text: str | None) -> Node | None:
    """The person's turn, saved now, before any model is asked."""
    if text is None:
        return None

    def write(doc: Document) -> Node:
        at = doc.resolve(parent).id if (parent is not None or doc.cursor_id) else None
        return add_turn(doc, at, text)

    if isinstance(target, Document):
        return write(target)

    def locked() -> Node:
        with store.editing(Path(target)) as doc:
            return write(doc)

    return await asyncio.to_thread(locked)
