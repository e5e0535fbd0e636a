"""Messages the TUI's widgets send to the app (Textual's way for parts to talk)."""

from __future__ import annotations

from textual.message import Message


class NodeChosen(Message):
    """A node was picked with the mouse (tree pane or children list): move there."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id


class SegmentClicked(Message):
    """A click in the branch view, on character `offset` of node `node_id`'s text."""

    def __init__(self, node_id: str, offset: int) -> None:
        super().__init__()
        self.node_id = node_id
        self.offset = offset
