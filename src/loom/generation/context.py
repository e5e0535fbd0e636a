"""What a model is asked to continue: a text, or a conversation of role-tagged messages.

A `Context` is built once per generation (`context_for`) and travels through every
stage: emulation frames it for the backend, trimming shortens it to the model's
window, cleanup joins the reply to it, and the node records its digest. Text is
loom's native shape (a base model continues the branch's full text); messages are
how chat models take a conversation (`mode="chat"`: the branch's turns).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from loom.document import Document
from loom.errors import InvalidOperation

ROLES = ("system", "user", "assistant")
# Which role a node of each kind speaks in a chat branch. `human` text is the person's,
# `model` and `import` text came from a model (docs/chat.md says so for users).
ROLE_OF_KIND = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "model": "assistant",
    "import": "assistant",
}
# text: continue the branch's text; chat: reply to its turns; as-user: reply to its whole
# text as one user message (a text branch handed to a chat model).
MODES = ("text", "chat", "as-user")
TRANSCRIPT_LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}
CHAT_KINDS = frozenset({"system", "user", "assistant"})
TURN_KEY = "turn"  # meta: this node starts a turn of its own (joined to a previous one of
# its role with a blank line); segments of one turn, such as split pieces, have none


@dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Context:
    """Exactly one of `text` / `messages` is meaningful; `system` goes first either way.

    text: the document text to continue (a branch's full text).
    messages: the conversation so far (user/assistant turns; system turns are folded into
        `system`), for a chat model to reply to.
    system: the system message (the document's, or the branch's own system turn).
    turn_ids: the node each message came from (a message may join several nodes).
    trimmed: characters (text) or messages (chat) left out at the front to fit the window.
    cut: characters cut from the head of the one message left (chat), when it alone was
        too long for the window.
    """

    text: str | None = None
    messages: tuple[Message, ...] = ()
    system: str | None = None
    turn_ids: tuple[tuple[str, ...], ...] = ()
    trimmed: int = 0
    cut: int = 0
    preamble: int = 0  # plain-text nodes (no role) folded into the first user message

    @classmethod
    def of_text(cls, text: str, *, system: str | None = None) -> Context:
        return cls(text=text, system=system)

    @classmethod
    def of_messages(
        cls,
        messages: Iterable[Message | dict[str, Any]],
        *,
        system: str | None = None,
        turn_ids: Sequence[Sequence[str]] = (),
    ) -> Context:
        """A conversation; system messages among `messages` are folded into `system`."""
        turns: list[Message] = []
        systems = [system] if system else []
        for item in messages:
            msg = item if isinstance(item, Message) else _message(item)
            if msg.role == "system":
                systems.append(msg.content)
            else:
                turns.append(msg)
        return cls(
            messages=tuple(turns),
            system="\n\n".join(systems) if systems else None,
            turn_ids=tuple(tuple(ids) for ids in turn_ids),
        )

    @property
    def is_chat(self) -> bool:
        return self.text is None

    @property
    def continues(self) -> bool:
        """A conversation whose last turn is the assistant's: the reply continues it."""
        return self.text is None and bool(self.messages) and self.messages[-1].role == "assistant"

    @property
    def seam_text(self) -> str:
        """The text a reply is joined to: the document, the assistant turn being continued,
        or nothing (a new turn in a conversation)."""
        if self.text is not None:
            return self.text
        return self.messages[-1].content if self.continues else ""

    def transcript(self, *, open_turn: bool = False) -> str:
        """The conversation as plain text (docs/chat.md): `Label: text` per turn, a blank line
        between turns. `open_turn` ends it ready for the assistant: after a new `Assistant:`
        label, or inside the assistant turn it continues."""
        turns = [("system", self.system)] if self.system else []
        turns += [(m.role, m.content) for m in self.messages]
        lines = [f"{TRANSCRIPT_LABELS[role]}: {text.strip()}" for role, text in turns]
        if open_turn and self.continues:
            last = self.messages[-1].content
            lines[-1] = f"{TRANSCRIPT_LABELS['assistant']}: {last.lstrip()}"
        elif open_turn:
            lines.append(f"{TRANSCRIPT_LABELS['assistant']}:")
        return "\n\n".join(lines)

    def message_dicts(self, *, with_system: bool = True) -> list[dict[str, str]]:
        """The conversation as a chat API takes it, system message first."""
        out = [m.to_dict() for m in self.messages]
        if with_system and self.system:
            out.insert(0, {"role": "system", "content": self.system})
        return out

    def chars(self) -> int:
        if self.text is not None:
            return len(self.text)
        return sum(len(m.content) for m in self.messages) + len(self.system or "")

    def digest(self) -> dict[str, Any]:
        """What a node records of its prompt: a short hash and the length, never the text.

        A text's hash is of the text alone (as loom has always recorded it); a
        conversation's is of its messages as a chat API receives them, so the record
        says whether two replies saw the same conversation.
        """
        if self.text is not None:
            out: dict[str, Any] = prompt_digest(self.text)
        else:
            import json

            canonical = json.dumps(self.message_dicts(), ensure_ascii=False, separators=(",", ":"))
            out = {**prompt_digest(canonical), "chars": self.chars()}
            out["messages"] = len(self.messages) + (1 if self.system else 0)
            if self.turn_ids:
                out["turns"] = [list(ids) for ids in self.turn_ids]
        if self.trimmed:
            out["trimmed"] = self.trimmed
        if self.cut:
            out["cut"] = self.cut
        return out

    def with_text(self, text: str, trimmed: int) -> Context:
        return replace(self, text=text, trimmed=trimmed)

    def with_messages(
        self,
        messages: tuple[Message, ...],
        turn_ids: tuple[tuple[str, ...], ...],
        trimmed: int,
        cut: int = 0,
    ) -> Context:
        return replace(self, messages=messages, turn_ids=turn_ids, trimmed=trimmed, cut=cut)


def prompt_digest(prompt: str) -> dict[str, Any]:
    """A short hash and the length of a prompt, never the text."""
    return {
        "sha256": hashlib.sha256(prompt.encode("utf-8", "replace")).hexdigest()[:16],
        "chars": len(prompt),
    }


def _message(item: dict[str, Any]) -> Message:
    role, content = item.get("role"), item.get("content")
    if role not in ROLES or not isinstance(content, str):
        raise InvalidOperation(
            f"a message needs a role ({', '.join(ROLES)}) and text content, got {item!r:.80}"
        )
    return Message(role, content)


@dataclass
class _Turn:
    role: str
    parts: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


def is_conversation(doc: Document, node_id: str) -> bool:
    """Whether the branch ending at `node_id` has chat turns (a node with a chat role)."""
    nodes = doc.nodes
    return any(nodes[n].get("kind") in CHAT_KINDS for n in doc.path_ids(node_id))


def context_for(doc: Document, node_id: str, mode: str = "text") -> Context:
    """What generating from `node_id` continues.

    "text": the branch's full text, with the document's system message.
    "as-user": the branch's full text as one user message, whatever its roles.
    "chat": the branch's turns in order. Nodes with a chat role (system, user, assistant)
    are turns; consecutive nodes of one role are joined into one message, `human` nodes
    count as user and `model`/`import` nodes as assistant (`ROLE_OF_KIND`) once the
    conversation has begun. Plain text before the first role, a text branch handed to a
    chat model, becomes (the start of) the first user message, a blank line before any
    user turn that follows it. The branch's own system turns, else the document's
    system message, go first.
    """
    if mode not in MODES:
        raise InvalidOperation(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "text":
        return Context.of_text(doc.full_text(node_id), system=doc.system)
    path = doc.path_ids(node_id)
    if mode == "as-user":
        return Context(
            messages=(Message("user", doc.full_text(node_id)),),
            system=doc.system,
            turn_ids=(tuple(path),),
            preamble=len(path),
        )
    first = next(
        (i for i, n in enumerate(path) if doc.nodes[n].get("kind") in CHAT_KINDS), len(path)
    )
    turns: list[_Turn] = []
    if first:
        text = "".join(doc.nodes[n].get("text", "") for n in path[:first])
        turns.append(_Turn("user", [text], list(path[:first])))
    for position, ancestor in enumerate(path[first:]):
        rec = doc.nodes[ancestor]
        role = ROLE_OF_KIND.get(str(rec.get("kind", "human")), "user")
        text = rec.get("text", "")
        if turns and turns[-1].role == role:
            # A turn of its own (`say` marks them), or the person's words after the text
            # branch: a blank line between, where the text before does not end in one.
            starts = position == 0 or bool((rec.get("meta") or {}).get(TURN_KEY))
            if starts and text and not turns[-1].parts[-1][-1:].isspace():
                text = "\n\n" + text
            turns[-1].parts.append(text)
            turns[-1].ids.append(ancestor)
        else:
            turns.append(_Turn(role, [text], [ancestor]))
    own_system = [t for t in turns if t.role == "system"]
    spoken = [t for t in turns if t.role != "system"]
    system = "\n\n".join("".join(t.parts) for t in own_system) if own_system else doc.system
    return Context(
        messages=tuple(Message(t.role, "".join(t.parts)) for t in spoken),
        system=system or None,
        turn_ids=tuple(tuple(t.ids) for t in spoken),
        preamble=first,
    )
