"""Modal screens: help, a one-line prompt, a text editor, a list to pick from, the log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from loom.tui.keys import CARET_KEYS, KEYS, MOUSE

DIALOG_CSS = """
{name} {{ align: center middle; background: $background 60%; }}
{name} > Vertical {{ width: 90%; max-width: 100; height: auto; max-height: 90%;
    background: $surface; border: round $primary; padding: 0 1; }}
{name} Label.title {{ text-style: bold; color: $primary; width: 100%; }}
{name} Label.hint {{ color: $foreground 60%; width: 100%; }}
"""


class HelpScreen(ModalScreen[None]):
    """Every binding, grouped, from the one key table; any key closes it."""

    DEFAULT_CSS = (
        DIALOG_CSS.format(name="HelpScreen")
        + """
    HelpScreen VerticalScroll { height: auto; max-height: 100%; }
    """
    )
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("loom · keys", classes="title")
            with VerticalScroll():
                yield Static(help_table(), id="help-table")
            yield Label(
                "esc closes · the same actions are in the palette (: or ctrl+p)", classes="hint"
            )


def help_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    group = None
    for key in KEYS:
        if key.group != group:
            group = key.group
            table.add_row(Text(group, style="underline"), "")
        table.add_row(key.display, key.description)
    table.add_row(Text("Text cursor (s, o)", style="underline"), "")
    for keys, what in CARET_KEYS:
        table.add_row(keys, what)
    table.add_row(Text("Mouse", style="underline"), "")
    for keys, what in MOUSE:
        table.add_row(keys, what)
    return table


class PromptScreen(ModalScreen[str | None]):
    """One line of input; enter returns it, esc returns None."""

    DEFAULT_CSS = DIALOG_CSS.format(name="PromptScreen")
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, value: str = "", placeholder: str = "", hint: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.placeholder = placeholder
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="title")
            yield Input(value=self.value, placeholder=self.placeholder)
            yield Label(self.hint or "enter accepts · esc cancels", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class TextScreen(ModalScreen[str | None]):
    """A text editor for a node's text or a note: ctrl+s returns the text, esc None."""

    DEFAULT_CSS = (
        DIALOG_CSS.format(name="TextScreen")
        + """
    TextScreen TextArea { height: 12; }
    """
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("escape", "cancel", "Cancel", priority=True),
    ]

    def __init__(self, title: str, text: str = "", hint: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.text = text
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="title")
            area = TextArea(self.text, soft_wrap=True, show_line_numbers=False)
            yield area
            yield Label(self.hint or "ctrl+s saves · esc cancels", classes="hint")

    def on_mount(self) -> None:
        area = self.query_one(TextArea)
        area.focus()
        area.move_cursor(area.document.end)

    def action_save(self) -> None:
        self.dismiss(self.query_one(TextArea).text)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PickScreen(ModalScreen[int | None]):
    """A list to choose from (digits or enter); returns the index, or None on esc."""

    DEFAULT_CSS = (
        DIALOG_CSS.format(name="PickScreen")
        + """
    PickScreen OptionList { height: auto; max-height: 16; }
    """
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        *(Binding(str(i), f"pick({i - 1})", show=False) for i in range(1, 10)),
    ]

    def __init__(self, title: str, options: Sequence[str | Text], hint: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.options = list(options)
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, classes="title")
            yield OptionList(
                *[Option(_numbered(i, o)) for i, o in enumerate(self.options)],
            )
            yield Label(self.hint or "1–9 or enter picks · esc cancels", classes="hint")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option_index)

    def action_pick(self, index: int) -> None:
        if 0 <= index < len(self.options):
            self.dismiss(index)

    def action_cancel(self) -> None:
        self.dismiss(None)


def _numbered(i: int, option: str | Text) -> Text:
    out = Text(f"{i + 1:>2} " if i < 9 else "   ", style="bold")
    out.append_text(option if isinstance(option, Text) else Text(option))
    return out


class LogScreen(ModalScreen[None]):
    """Recent changes (the undo journal) and the errors this session showed."""

    DEFAULT_CSS = (
        DIALOG_CSS.format(name="LogScreen")
        + """
    LogScreen VerticalScroll { height: auto; max-height: 100%; }
    """
    )
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,L", "dismiss", "Close")]

    def __init__(self, changes: list[dict[str, Any]], errors: list[str]) -> None:
        super().__init__()
        self.changes = changes
        self.errors = errors

    def compose(self) -> ComposeResult:
        body = Text()
        body.append("Recent changes (newest first; u undoes the top one)\n", style="underline")
        for entry in reversed(self.changes[-30:]):
            body.append(f"  {str(entry.get('at', ''))[:19].replace('T', ' ')}  ", style="dim")
            body.append(f"{entry.get('op', '')}: {entry.get('summary', '')}\n")
        if not self.changes:
            body.append("  (none)\n", style="dim")
        body.append("\nErrors this session\n", style="underline")
        for error in reversed(self.errors[-30:]):
            body.append(f"  {error}\n", style="red")
        if not self.errors:
            body.append("  (none)\n", style="dim")
        with Vertical():
            yield Label("loom · log", classes="title")
            with VerticalScroll():
                yield Static(body)
            yield Label("esc closes", classes="hint")
