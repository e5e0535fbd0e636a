"""Modal screens: help, a one-line prompt, a text editor, a list to pick from, the log."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from loom.tui.keys import CARET_KEYS, KEYS, MOUSE

if TYPE_CHECKING:
    from loom.tui.generation import Settings

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


class GenerationPanel(ModalScreen["Settings | None"]):
    """The next generation's model, preset, n and modulation, with what they resolve to
    (what `loom params --explain` would say). ctrl+s keeps them, esc leaves them as they were."""

    DEFAULT_CSS = (
        DIALOG_CSS.format(name="GenerationPanel")
        + """
    GenerationPanel Horizontal { height: auto; }
    GenerationPanel Horizontal > Label { width: 12; padding: 1 0 0 0; }
    GenerationPanel Select, GenerationPanel Input { width: 1fr; }
    GenerationPanel #explain { height: auto; max-height: 12; color: $foreground 80%; }
    GenerationPanel #problem { color: $error; height: auto; }
    """
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Use these", priority=True),
        Binding("escape", "cancel", "Cancel", priority=True),
    ]

    def __init__(
        self,
        settings: Settings,
        models: list[str],
        presets: list[str],
        explain: Callable[[Settings], str],
    ) -> None:
        super().__init__()
        self.settings = settings
        self.models = models
        self.presets = presets
        self.explain = explain

    def compose(self) -> ComposeResult:
        from textual.containers import Horizontal
        from textual.widgets import Select

        s = self.settings
        with Vertical():
            yield Label("Next generation", classes="title")
            with Horizontal():
                yield Label("model")
                yield Select(
                    [(m, m) for m in self.models],
                    value=s.model if s.model in self.models else Select.NULL,
                    prompt="the default model",
                    id="model",
                )
            with Horizontal():
                yield Label("preset")
                yield Select(
                    [(p, p) for p in self.presets],
                    value=s.presets[0]
                    if s.presets and s.presets[0] in self.presets
                    else Select.NULL,
                    prompt="none",
                    id="preset",
                )
            with Horizontal():
                yield Label("n")
                yield Input(str(s.n or ""), placeholder="the document's default", id="n")
            with Horizontal():
                yield Label("modulation")
                yield Input(
                    "; ".join(f"{flag} {value}" for flag, value in s.modulation),
                    placeholder="sweep temperature=0.6:1.4; jitter top_p=0.05",
                    id="modulation",
                )
            yield Static("", id="problem")
            yield Static("", id="explain")
            yield Label("ctrl+s uses these · esc keeps the old ones", classes="hint")

    def on_mount(self) -> None:
        self.update_explain()

    def read(self) -> Settings:
        from textual.widgets import Select

        from loom.errors import UsageError
        from loom.tui.generation import Settings, parse_modulation

        model = self.query_one("#model", Select).value
        preset = self.query_one("#preset", Select).value
        n_text = self.query_one("#n", Input).value.strip()
        if n_text and not (n_text.isdecimal() and int(n_text) >= 1):
            raise UsageError(f"n must be a whole number from 1, got {n_text!r}")
        settings = Settings(
            model=model if isinstance(model, str) else None,
            presets=(preset,) if isinstance(preset, str) else (),
            n=int(n_text) if n_text else None,
            modulation=parse_modulation(self.query_one("#modulation", Input).value),
        )
        settings.request()  # the library's own checks (n's range, the modulation's syntax)
        return settings

    def update_explain(self) -> None:
        from loom.errors import LoomError

        problem = self.query_one("#problem", Static)
        try:
            settings = self.read()
            text = self.explain(settings)
        except LoomError as exc:
            problem.update(Text(exc.message))
            return
        problem.update("")
        self.query_one("#explain", Static).update(Text(text))

    def on_input_changed(self, event: Input.Changed) -> None:
        self.update_explain()

    def on_select_changed(self, event: Any) -> None:
        self.update_explain()

    def action_save(self) -> None:
        from loom.errors import LoomError

        try:
            settings = self.read()
        except LoomError as exc:
            self.query_one("#problem", Static).update(Text(exc.message))
            return
        self.dismiss(settings)

    def action_cancel(self) -> None:
        self.dismiss(None)
