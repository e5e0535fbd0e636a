"""Every key binding, in one table: the app's bindings, the help overlay and the command
palette are all made from it, so none of them can fall out of step."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Key:
    keys: tuple[str, ...]  # Textual key names
    action: str  # the app's action (without "action_")
    description: str
    group: str
    shown: str = ""  # how the help shows the keys (default: from `keys`)
    palette: bool = True  # offered in the command palette

    @property
    def display(self) -> str:
        return self.shown or " ".join(_pretty(k) for k in self.keys)


_NAMES = {
    "left": "←",
    "right": "→",
    "up": "↑",
    "down": "↓",
    "ctrl+@": "ctrl+space",
    "question_mark": "?",
    "slash": "/",
    "colon": ":",
    "apostrophe": "'",
    "left_square_bracket": "[",
    "right_square_bracket": "]",
    "escape": "esc",
}


def _pretty(key: str) -> str:
    return _NAMES.get(key, key)


KEYS: tuple[Key, ...] = (
    # move
    Key(("left", "h"), "parent", "Go to the parent", "Move"),
    Key(("right", "l"), "child", "Go to the last-visited child (re-trace)", "Move"),
    Key(("up", "k"), "sibling(-1)", "Previous sibling (or move up the focused list)", "Move"),
    Key(("down", "j"), "sibling(1)", "Next sibling (or move down the focused list)", "Move"),
    Key(
        tuple(str(i) for i in range(1, 10)),
        "nth_child",
        "Go to child N, as `loom ls` numbers them",
        "Move",
        shown="1–9",
        palette=False,
    ),
    Key(("enter",), "enter", "Go to the selected child (in the children list)", "Move"),
    Key(("r", "home"), "root", "Go to the root", "Move"),
    Key(("left_square_bracket",), "bookmark_step(-1)", "Previous bookmark", "Move"),
    Key(("right_square_bracket",), "bookmark_step(1)", "Next bookmark", "Move"),
    Key(("apostrophe",), "jump", "Jump to a node by id prefix", "Move"),
    Key(("slash",), "search", "Search text", "Move"),
    Key(("n",), "search_step(1)", "Next match", "Move"),
    Key(("N",), "search_step(-1)", "Previous match", "Move"),
    Key(
        ("tab",), "focus_next", "Focus the next pane (text, children, tree)", "Move", palette=False
    ),
    # generate
    Key(
        ("ctrl+@", "ctrl+space", "g"),
        "generate",
        "Generate children of the current node",
        "Generate",
        shown="ctrl+space g",
    ),
    Key(("R",), "regenerate", "Regenerate the current node (a new sibling)", "Generate"),
    Key(("G",), "gen_panel", "Generation settings: model, preset, n, modulation", "Generate"),
    # change
    Key(("e",), "edit", "Edit the node here (ctrl+s saves, esc cancels)", "Change"),
    Key(("E",), "edit_external", "Edit the node in $EDITOR", "Change"),
    Key(("a",), "add_child", "Add a child by typing", "Change"),
    Key(("A",), "add_sibling", "Add a sibling by typing", "Change"),
    Key(("s",), "split", "Split the node at the text cursor", "Change"),
    Key(("m",), "merge", "Merge the node into its parent", "Change"),
    Key(("x",), "archive", "Delete the node and its subtree (restorable)", "Change"),
    Key(("X",), "restore", "Restore a deleted child", "Change"),
    Key(("u",), "undo", "Undo", "Change"),
    Key(("ctrl+r",), "redo", "Redo", "Change"),
    # mark
    Key(("b",), "bookmark", "Bookmark or unbookmark the node", "Mark"),
    Key(("t",), "tag", "Tag the node (+tag -tag)", "Mark"),
    Key(("c",), "note", "Write a note on the node", "Mark"),
    # view
    Key(("p",), "probs", "Token probabilities on/off (coloured, with a legend)", "View"),
    Key(("o",), "alternatives", "Alternatives at a token; branch from one", "View"),
    Key(("z",), "toggle_tree", "Show or hide the tree pane", "View"),
    Key(("ctrl+t",), "toggle_theme", "Light or dark theme", "View"),
    Key(("L",), "log", "The log: recent changes and errors", "View"),
    Key(("colon", "ctrl+p"), "command_palette", "Command palette", "View", palette=False),
    Key(("question_mark",), "help", "This help", "View", palette=False),
    Key(("escape",), "escape", "Cancel: generation, text cursor, focus", "View", palette=False),
    Key(("q",), "quit", "Quit (saves first)", "View"),
)

# In the text-cursor modes (split, alternatives): what the keys do there.
CARET_KEYS: tuple[tuple[str, str], ...] = (
    ("← → h l", "move the text cursor by a character (a token, for alternatives)"),
    ("w b", "by a word"),
    ("home end", "to the start or end of the node"),
    ("enter", "split here / show the alternatives here"),
    ("click", "put the text cursor there"),
    ("esc", "leave the text cursor"),
)

MOUSE: tuple[tuple[str, str], ...] = (
    ("click a tree row", "go to that node"),
    ("click a child", "go to that child"),
    ("click in the text", "go to the node that wrote it"),
    ("scroll", "scroll the pane under the pointer"),
)
