"""The loom TUI: a thin shell over the library.

Every action is a library call (`loom.ops`, `loom.journal`, `loom.logprobs`,
`loom.search`) run through a `loom.session.Session`: it changes the in-memory document at
once, so a keypress repaints without touching the disk, and the session saves it from a
worker thread shortly after (under the writer lock, keeping other processes' edits). A
timer notices other processes' saves (the file's identity changes) and syncs them in.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.timer import Timer

from loom import journal, logprobs, ops
from loom.cli.render import flat
from loom.document import Document
from loom.errors import LoomError
from loom.session import Session, journal_step
from loom.tui import caret
from loom.tui.generation import Finished, Runner, Settings
from loom.tui.keys import KEYS
from loom.tui.messages import NodeChosen, SegmentClicked
from loom.tui.screens.dialogs import (
    HelpScreen,
    LogScreen,
    PickScreen,
    PromptScreen,
    TextScreen,
)
from loom.tui.widgets.branch import BANDS, BranchView
from loom.tui.widgets.children import ChildrenList, Stream
from loom.tui.widgets.status import KeyHints, StatusLine, status_text
from loom.tui.widgets.tree import TreePane

SAVE_DELAY = 0.1  # seconds of quiet after a change before saving (one save for a burst)
SAVE_MAX_DELAY = 1.0  # never hold a change back longer than this…
SLOW_SAVE_MAX_DELAY = 3.0  # …unless saves are slow (a 100k-node file): then wait for a pause
WATCH_INTERVAL = 0.25  # how often to look for another process's save
RETRY_AFTER = 2.0  # after a failed save, before trying again

CARET_BINDINGS: list[BindingType] = [
    Binding("left,h", "caret_move(-1)", show=False, priority=True),
    Binding("right,l", "caret_move(1)", show=False, priority=True),
    Binding("b", "caret_word(-1)", show=False, priority=True),
    Binding("w", "caret_word(1)", show=False, priority=True),
    Binding("home", "caret_edge(0)", show=False, priority=True),
    Binding("end", "caret_edge(1)", show=False, priority=True),
    Binding("enter", "caret_accept", show=False, priority=True),
    Binding("escape", "caret_leave", show=False, priority=True),
]


def _bindings() -> list[BindingType]:
    out: list[BindingType] = list(CARET_BINDINGS)
    for key in KEYS:
        for name in key.keys:
            action = f"nth_child({name})" if key.action == "nth_child" else key.action
            out.append(Binding(name, action, key.description, show=False))
    return out


class LoomApp(App[None]):
    """`loom tui`: weave a document from the terminal. Build it with `loom.tui.make_app`."""

    CSS_PATH = "loom.tcss"
    TITLE = "loom"
    BINDINGS: ClassVar[list[BindingType]] = _bindings()
    COMMAND_PALETTE_BINDING = "ctrl+p"

    def __init__(self, session: Session, *, theme: str | None = None) -> None:
        super().__init__()
        self.session = session
        if theme:
            self.theme = theme
        self.errors: list[str] = []  # this session's errors, newest last (the log screen)
        self.last_error: str | None = None
        self.caret_mode: str | None = None  # "split" or "token" while a text cursor is shown
        self.matches: list[str] = []  # node ids matching the last search, in document order
        self.match_index = -1
        self._syncing = False
        self._sync_again = False
        self._save_timer: Timer | None = None
        self._first_unsaved: float | None = None
        self._failed_at = 0.0
        self._quitting = False
        self._last_sync_seconds = 0.0
        self.settings = Settings()
        self.runner: Runner | None = None
        self.streams: list[Stream] = []
        self._written: tuple[str, ...] = ()
        self.generating = False  # from starting a generation until its end is handled

    # ---- layout and painting ----------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            yield BranchView(id="branch")
            yield TreePane(id="tree")
        yield ChildrenList(id="children")
        yield StatusLine(id="status")
        yield KeyHints(id="hints")

    def on_mount(self) -> None:
        for signum in (signal.SIGHUP, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                asyncio.get_running_loop().add_signal_handler(signum, self._hang_up, signum)
        self.query_one(BranchView).focus()
        self.set_interval(WATCH_INTERVAL, self._watch)
        self.call_after_refresh(self.refresh_all)
        self.refresh_all()

    def on_unmount(self) -> None:
        if self.runner is not None:
            self.runner.close()  # a running generation keeps what finished; backends close

    def on_resize(self) -> None:
        self.query_one(TreePane).display = self.size.width >= 70 and self._tree_wanted

    _tree_wanted = True

    @property
    def doc(self) -> Document:
        return self.session.doc

    def refresh_all(self) -> None:
        """Repaint every pane from the session's document (cheap: each pane paints only
        what is on screen, and the branch layout only re-flows what changed)."""
        doc = self.doc
        cursor = doc.cursor_id
        path = doc.path_ids(cursor) if cursor else []
        branch = self.query_one(BranchView)
        if self.caret_mode is None:
            branch.caret = None
        branch.show(doc, path)
        self.query_one(ChildrenList).show(doc, cursor)
        self._depth = max(0, len(path) - 1)
        self.refresh_status()
        # The tree pane after the text has been painted, once per burst of keys: it costs
        # O(depth) in loom.view today, and the text is what a keypress is for.
        if not self._tree_due:
            self._tree_due = True
            self.call_after_refresh(self._refresh_tree)

    _tree_due = False

    def _refresh_tree(self) -> None:
        self._tree_due = False
        tree = self.query_one(TreePane)
        if tree.display:
            tree.show(self.doc, self.doc.cursor_id)

    _depth = 0

    def refresh_status(self) -> None:
        status = self.query_one(StatusLine)
        width = self.size.width or 80
        status.set(
            status_text(
                flat(self.session.path.name),
                self.doc,
                self._depth,
                self._save_state(),
                self.generation_summary(),
                width,
                self.last_error,
            )
        )
        self.query_one(KeyHints).set_hints(self.hints())

    def generation_summary(self) -> str:
        return ("generating… esc stops · " if self.generating else "") + self.settings.summary()

    def _save_state(self) -> str:
        if self._failed_at and self.session.pending:
            return f"NOT SAVED ({self.session.pending})"
        if self._syncing:
            return "saving…"
        if self.session.pending:
            return f"unsaved ({self.session.pending})"
        return "saved"

    def hints(self) -> Text:
        if self.caret_mode == "split":
            return Text("SPLIT  ←→ move · w b word · enter split here · esc cancel")
        if self.caret_mode == "token":
            return Text("TOKENS  ←→ move · enter alternatives · esc leave  ").append_text(
                probability_legend(self.query_one(BranchView))
            )
        if self.query_one(BranchView).probs:
            return Text("p hide probabilities · o alternatives  ").append_text(
                probability_legend(self.query_one(BranchView))
            )
        return Text("g gen  ←→↑↓ move  e edit  a add  s split  / find  u undo  ? all keys  q quit")

    # ---- errors -----------------------------------------------------------------------

    def error(self, message: str) -> None:
        """One line, in the key hints for a few seconds and in the status line until the
        next successful action; kept in the log screen."""
        self.last_error = message
        self.errors.append(f"{time.strftime('%H:%M:%S')} {message}")
        self.query_one(KeyHints).show_error(message)
        self.refresh_status()

    def say(self, message: str) -> None:
        self.notify(message, timeout=3)

    # ---- changing the document ----------------------------------------------------------

    def change(self, fn: Callable[[Document], Any], label: str) -> Any:
        """Apply a library call to the document: repaint now, save shortly (in a worker)."""
        try:
            result = self.session.apply(fn, label)
        except LoomError as exc:
            self.error(exc.message)
            return None
        except Exception as exc:  # a bug: say so and keep the session (and its queue) alive
            self.error(f"internal error in {label}: {type(exc).__name__}: {exc} (please report it)")
            return None
        self.last_error = None
        self.refresh_all()
        self.schedule_sync()
        return result

    def goto(self, node_id: str) -> None:
        self.change(lambda d: ops.goto(d, node_id), f"go to {node_id[:8]}")

    def _cursor(self) -> str | None:
        cursor = self.doc.cursor_id
        if cursor is None:
            self.error("the document is empty: press a to add the first node")
        return cursor

    # ---- saving and watching (off the UI thread) ----------------------------------------------

    def schedule_sync(self) -> None:
        now = time.monotonic()
        if self._first_unsaved is None:
            self._first_unsaved = now
        if self._save_timer is not None:
            self._save_timer.stop()
        # A save of the whole file holds the interpreter while it encodes (~150 ms at 100k
        # nodes): when saves are that slow, wait for a longer pause in the typing.
        quiet = max(SAVE_DELAY, 3 * self._last_sync_seconds)
        longest = SAVE_MAX_DELAY if quiet <= SAVE_DELAY else SLOW_SAVE_MAX_DELAY
        # Never 0: a zero-delay Textual timer can divide by zero (textual 8.2.8).
        delay = min(quiet, max(0.005, self._first_unsaved + longest - now))
        self._save_timer = self.set_timer(delay, self.start_sync)

    def start_sync(self) -> None:
        self._save_timer = None
        if self._syncing:
            self._sync_again = True
            return
        self._syncing = True
        self.run_worker(self._sync(), group="sync", exit_on_error=False)

    async def _sync(self) -> None:
        follow = False
        started = time.monotonic()
        try:
            result = await asyncio.to_thread(self.session.sync)
            self._last_sync_seconds = time.monotonic() - started
        except LoomError as exc:
            self._failed_at = time.monotonic()
            self.error(f"not saved: {exc.message}")
        except Exception as exc:  # a bug: keep the changes queued, say so, keep running
            self._failed_at = time.monotonic()
            self.error(f"not saved: internal error: {type(exc).__name__}: {exc}")
        else:
            self._failed_at = 0.0
            dropped = self.session.adopt(result)
            follow = result.fresh is not None
            for label, why in dropped:
                self.error(
                    f"another process changed the document: {label} no longer applies ({why.message})"
                )
        finally:
            self._syncing = False
            if not self.session.pending:
                self._first_unsaved = None
        if follow:
            self.refresh_all()
        else:
            self.refresh_status()
        self._streams_arrived()
        if self._sync_again and not self._quitting:
            self._sync_again = False
            self.start_sync()

    def _watch(self) -> None:
        """Start a sync when another process saved the file, or a failed save can retry."""
        if self._syncing or self._quitting or self._save_timer is not None:
            return
        if self._failed_at and time.monotonic() - self._failed_at < RETRY_AFTER:
            return  # the file is missing or unwritable: do not retry four times a second
        if self.session.pending or self.session.changed_outside():
            self.start_sync()

    async def wait_synced(self) -> None:
        """Until every change is in the file (tests and quitting)."""
        while True:
            if self._save_timer is not None:
                self._save_timer.stop()
                self.start_sync()
            if not self._syncing and not self.session.pending:
                return
            if not self._syncing:
                self.start_sync()
            await asyncio.sleep(0.01)
            if self._failed_at:
                return

    def _hang_up(self, signum: int = signal.SIGHUP) -> None:
        """The terminal went away (SIGHUP: a dropped SSH connection), or the process is told
        to end (SIGTERM: `kill`, a service manager): save what is queued, and go.

        Nobody can answer a question now, so this saves at once, on this thread, unless a
        save is already running (it holds the changes it took; those after it are lost)."""
        if self.runner is not None and self.runner.running:
            self.runner.cancel()  # its finished branches are written as it ends
            self.runner.join(30)
        if not self._syncing:
            with contextlib.suppress(LoomError):
                self.session.close()
        self.exit(return_code=128 + signum)

    async def action_quit(self) -> None:
        if self._quitting and self._failed_at:
            self.exit()  # the second q after a failed save: quit anyway
            return
        self._quitting = True
        self._failed_at = 0.0
        if self.runner is not None and self.runner.running:
            self.runner.cancel()  # the finished branches are written before it ends
            await asyncio.to_thread(self.runner.join, 60)
        await self.wait_synced()
        if self.session.pending:
            self._quitting = False
            self._quitting = True  # keep the next q as "quit anyway"
            self.error("could not save the last changes (see above); press q again to quit anyway")
            return
        self.exit()

    # ---- messages from the widgets ----------------------------------------------------------

    def on_node_chosen(self, message: NodeChosen) -> None:
        self.leave_caret()
        self.goto(message.node_id)

    def on_segment_clicked(self, message: SegmentClicked) -> None:
        if self.caret_mode is not None and message.node_id == self.doc.cursor_id:
            self.set_caret(message.offset)
            return
        if message.node_id != self.doc.cursor_id:
            self.leave_caret()
            self.goto(message.node_id)

    # ---- moving -----------------------------------------------------------------------------

    def action_parent(self) -> None:
        if (cursor := self._cursor()) is not None:
            self._move(lambda: ops.parent_of(self.doc, cursor))

    def action_child(self) -> None:
        if (cursor := self._cursor()) is not None:
            self._move(lambda: ops.child_of(self.doc, cursor))

    def action_nth_child(self, number: int) -> None:
        if (cursor := self._cursor()) is not None:
            self._move(lambda: ops.child_of(self.doc, cursor, number - 1))

    def action_sibling(self, step: int) -> None:
        focused = self.focused
        if isinstance(focused, ChildrenList) and focused.ids:
            focused.move(step)
            return
        if isinstance(focused, TreePane) and focused.rows:
            at = next(
                (
                    i
                    for i, r in enumerate(focused.rows)
                    if self.doc.cursor_id in (r.node_id, *r.run)
                ),
                0,
            )
            target = focused.rows[max(0, min(len(focused.rows) - 1, at + step))]
            self.goto(target.node_id)
            return
        if (cursor := self._cursor()) is not None:
            self._move(lambda: ops.sibling_of(self.doc, cursor, step))

    def action_enter(self) -> None:
        children = self.query_one(ChildrenList)
        if children.ids:
            self.goto(children.ids[min(children.selected, len(children.ids) - 1)])
        else:
            self.error("this node has no children")

    def action_root(self) -> None:
        if (cursor := self._cursor()) is not None:
            self._move(lambda: ops.root_of(self.doc, cursor))

    def action_bookmark_step(self, step: int) -> None:
        self._move(lambda: ops.bookmark_from(self.doc, self.doc.cursor_id, step))

    def _move(self, pick: Callable[[], str]) -> None:
        try:
            target = pick()
        except LoomError as exc:
            self.error(exc.message)
            return
        self.goto(target)

    def action_jump(self) -> None:
        def jump(prefix: str | None) -> None:
            if prefix:
                self._move(lambda: self.doc.resolve(prefix).id)

        self.push_screen(PromptScreen("Jump to node", placeholder="an id or a prefix of one"), jump)

    def action_search(self) -> None:
        def search(pattern: str | None) -> None:
            if pattern:
                self.run_search(pattern)

        self.push_screen(
            PromptScreen(
                "Search",
                placeholder="text (lower case ignores case)",
                hint="enter finds the next match after this node · n N step · esc cancels",
            ),
            search,
        )

    def run_search(self, pattern: str) -> None:
        from loom.search import search

        try:
            found = search(self.doc, pattern, ignore_case=pattern == pattern.lower())
        except LoomError as exc:
            self.error(exc.message)
            return
        self.matches = [m.node_id for m in found]
        self.match_index = -1
        if not self.matches:
            self.error(f"no node matches {pattern!r}")
            return
        self.action_search_step(1)

    def action_search_step(self, step: int) -> None:
        if not self.matches:
            self.error("no search yet: press / to search")
            return
        cursor = self.doc.cursor_id
        i = self.match_index
        if 0 <= i < len(self.matches) and self.matches[i] == cursor:
            i = (i + step) % len(self.matches)
        else:
            try:
                target = ops.next_in_order(self.doc, cursor, self.matches, step)
            except LoomError as exc:
                self.error(exc.message)
                return
            i = self.matches.index(target)
        self.match_index = i
        target = self.matches[i]
        if target not in self.doc.nodes:
            self.error("that match is gone (the document changed): search again")
            return
        self.goto(target)
        self.say(f"match {i + 1} of {len(self.matches)}")

    # ---- changing -----------------------------------------------------------------------------

    def action_edit(self) -> None:
        if (cursor := self._cursor()) is None:
            return
        node = self.doc.node(cursor)

        def save(text: str | None) -> None:
            if text is not None:
                self._edit(cursor, text)

        hint = "ctrl+s saves · esc cancels"
        if node.child_ids:
            hint += " · it has children: the new text becomes a new version beside it"
        self.push_screen(TextScreen(f"Edit node {cursor[:8]}", node.text, hint), save)

    def _edit(self, node_id: str, text: str) -> None:
        result = self.change(lambda d: ops.edit(d, node_id, text), f"edit {node_id[:8]}")
        if result is not None and result.id != node_id:
            self.goto(result.id)
            self.say(
                f"saved as a new version {result.id[:8]}; the children stay with {node_id[:8]}"
            )

    def action_edit_external(self) -> None:
        if (cursor := self._cursor()) is None:
            return
        from loom.editor import edit_text

        try:
            with self.suspend():
                text = edit_text(self.doc.node(cursor).text, otherwise="; press e to edit here")
        except LoomError as exc:
            self.error(exc.message)
            return
        except Exception as exc:  # SuspendNotSupported (no real terminal)
            self.error(f"cannot open an editor here ({type(exc).__name__}); press e to edit here")
            return
        self.refresh()
        self._edit(cursor, text)

    def action_add_child(self) -> None:
        cursor = self.doc.cursor_id

        def add(text: str | None) -> None:
            if text:
                self.change(lambda d: ops.add_child(d, cursor, text), "add")

        title = "Add a child" if cursor else "Add the first node"
        self.push_screen(TextScreen(title, "", "ctrl+s adds · esc cancels"), add)

    def action_add_sibling(self) -> None:
        if (cursor := self._cursor()) is None:
            return

        def add(text: str | None) -> None:
            if text:
                self.change(lambda d: ops.add_sibling(d, cursor, text), "add sibling")

        self.push_screen(TextScreen("Add a sibling", "", "ctrl+s adds · esc cancels"), add)

    def action_split(self) -> None:
        if (cursor := self._cursor()) is None:
            return
        text = self.doc.node(cursor).text
        if len(text) < 2:
            self.error("this node's text is too short to split")
            return
        self.enter_caret("split", caret.split_point(text))

    def action_merge(self) -> None:
        if (cursor := self._cursor()) is not None:
            self.change(lambda d: ops.merge(d, cursor), f"merge {cursor[:8]}")

    def action_archive(self) -> None:
        if (cursor := self._cursor()) is not None and self.change(
            lambda d: ops.archive(d, cursor), f"delete {cursor[:8]}"
        ):
            self.say(f"deleted {cursor[:8]} and its subtree (X restores, u undoes)")

    def action_restore(self) -> None:
        if (cursor := self._cursor()) is None:
            return
        nodes = self.doc.nodes
        gone = [c for c in nodes[cursor].get("children", ()) if nodes[c].get("archived")]
        if not gone:
            self.error("no deleted children here")
            return

        def restore(index: int | None) -> None:
            if index is not None:
                target = gone[index]
                self.change(lambda d: ops.restore(d, target), f"restore {target[:8]}")

        if len(gone) == 1:
            restore(0)
            return
        from loom.cli.render import preview

        options = [f"{g[:8]}  {preview(str(nodes[g].get('text', '')), 60)}" for g in gone]
        self.push_screen(PickScreen("Restore a deleted child", options), restore)

    def action_undo(self) -> None:
        entry = self.change(journal_step("undo"), "undo")
        if entry:
            self.say(f"undid: {entry.get('summary') or entry.get('op')}")

    def action_redo(self) -> None:
        entry = self.change(journal_step("redo"), "redo")
        if entry:
            self.say(f"redid: {entry.get('summary') or entry.get('op')}")

    # ---- marking ------------------------------------------------------------------------------

    def action_bookmark(self) -> None:
        if (cursor := self._cursor()) is not None:
            on = "bookmark" not in self.doc.nodes[cursor]
            self.change(lambda d: ops.set_bookmark(d, cursor, on), "bookmark")

    def action_tag(self) -> None:
        if (cursor := self._cursor()) is None:
            return
        current = " ".join(self.doc.node(cursor).tags)

        def tag(answer: str | None) -> None:
            if answer is None:
                return
            words = answer.split()
            add = [w.lstrip("+") for w in words if not w.startswith("-")]
            remove = [w[1:] for w in words if w.startswith("-")]
            self.change(lambda d: ops.tag(d, cursor, add, remove), f"tag {cursor[:8]}")

        hint = "names add tags, -name removes one · enter saves · esc cancels"
        title = "Tag the node" + (f" (now: {current})" if current else "")
        self.push_screen(PromptScreen(title, placeholder="draft good -todo", hint=hint), tag)

    def action_note(self) -> None:
        if (cursor := self._cursor()) is None:
            return

        def note(text: str | None) -> None:
            if text is not None:
                self.change(lambda d: ops.set_note(d, cursor, text), f"note on {cursor[:8]}")

        self.push_screen(
            TextScreen(
                f"Note on {cursor[:8]}",
                self.doc.node(cursor).note,
                "ctrl+s saves · empty removes it",
            ),
            note,
        )

    # ---- token probabilities and the text cursor ----------------------------------------------------

    def action_probs(self) -> None:
        branch = self.query_one(BranchView)
        branch.probs = not branch.probs
        branch._tokens.clear()
        branch.refresh()
        if (
            branch.probs
            and self.doc.cursor_id
            and logprobs.of(self.doc, self.doc.cursor_id) is None
        ):
            self.say("this node has no token probabilities recorded (generated text has them)")
        self.refresh_status()

    def action_alternatives(self) -> None:
        if (cursor := self._cursor()) is None:
            return
        probs = logprobs.of(self.doc, cursor)
        if probs is None:
            self.error("this node has no token probabilities recorded")
            return
        if not logprobs.aligned(probs, self.doc.node(cursor).text):
            self.error(
                "this node was edited since it was generated: its probabilities no longer match"
            )
            return
        branch = self.query_one(BranchView)
        if not branch.probs:
            branch.probs = True
        self.enter_caret("token", caret.first_choice(probs))

    def enter_caret(self, mode: str, at: int) -> None:
        self.caret_mode = mode
        self.set_caret(at)

    def set_caret(self, at: int) -> None:
        branch = self.query_one(BranchView)
        text = self.doc.node(self.doc.cursor_id).text if self.doc.cursor_id else ""
        at = max(0, min(len(text), at))
        if self.caret_mode == "token":
            probs = logprobs.of(self.doc, self.doc.cursor_id or "")
            if probs is not None:
                at = caret.step_token(probs, min(at, max(0, len(text) - 1)), 0)
        branch.caret = at
        branch.refresh()
        branch.follow()
        self.refresh_status()

    def leave_caret(self) -> None:
        if self.caret_mode is None:
            return
        self.caret_mode = None
        branch = self.query_one(BranchView)
        branch.caret = None
        branch.refresh()
        self.refresh_status()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action.startswith("caret_"):
            # Text-cursor keys only while a text cursor shows, on the main screen.
            return self.caret_mode is not None and len(self.screen_stack) == 1
        return True

    def _caret_text(self) -> tuple[str, int]:
        branch = self.query_one(BranchView)
        return self.doc.node(self.doc.cursor_id or "").text, branch.caret or 0

    def action_caret_move(self, step: int) -> None:
        text, at = self._caret_text()
        if self.caret_mode == "token":
            probs = logprobs.of(self.doc, self.doc.cursor_id or "")
            self.set_caret(caret.step_token(probs, at, step) if probs else at)
        else:
            self.set_caret(caret.step_char(text, at, step))

    def action_caret_word(self, step: int) -> None:
        text, at = self._caret_text()
        self.set_caret(caret.step_word(text, at, step))

    def action_caret_edge(self, end: int) -> None:
        text, _ = self._caret_text()
        self.set_caret(len(text) if end else 0)

    def action_caret_leave(self) -> None:
        self.leave_caret()

    def action_caret_accept(self) -> None:
        cursor = self.doc.cursor_id
        if cursor is None:
            return
        _, at = self._caret_text()
        if self.caret_mode == "split":
            self.leave_caret()
            self.change(lambda d: ops.split(d, cursor, at), f"split {cursor[:8]}")
            return
        self.show_alternatives(cursor, at)

    def show_alternatives(self, node_id: str, offset: int) -> None:
        try:
            choice = logprobs.alternatives_at(self.doc, node_id, offset)
        except LoomError as exc:
            self.error(exc.message)
            return
        if not choice.alternatives:
            self.error(f"no alternatives were recorded for the token {choice.token!r}")
            return
        import math

        chosen = "" if choice.logprob is None else f" (p={math.exp(choice.logprob):.2f})"
        options = [Text(f"{tok!r:<24} p={math.exp(lp):.3f}") for tok, lp in choice.alternatives]

        def branch_from(index: int | None) -> None:
            if index is None:
                return
            self.leave_caret()
            self.change(
                lambda d: logprobs.branch_from_alternative(d, node_id, choice.start, index),
                f"branch from an alternative in {node_id[:8]}",
            )

        self.push_screen(
            PickScreen(
                f"Instead of {choice.token!r}{chosen}: branch from",
                options,
                "the new sibling holds the text up to here, then the chosen token · esc cancels",
            ),
            branch_from,
        )

    # ---- view -----------------------------------------------------------------------------

    def action_toggle_tree(self) -> None:
        self._tree_wanted = not self._tree_wanted
        tree = self.query_one(TreePane)
        tree.display = self._tree_wanted and self.size.width >= 70
        self.refresh_all()

    def action_toggle_theme(self) -> None:
        self.theme = "textual-light" if self.current_theme.dark else "textual-dark"

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_log(self) -> None:
        self.push_screen(LogScreen(journal.undo_entries(self.doc), self.errors))

    def action_escape(self) -> None:
        if self.generating and self.runner is not None:
            if self.runner.cancel():
                self.say("stopping: the branches that finished are kept")
        elif self.caret_mode is not None:
            self.leave_caret()
        elif not isinstance(self.focused, BranchView):
            self.query_one(BranchView).focus()

    # ---- generation ------------------------------------------------------------------------------

    def _runner(self) -> Runner:
        if self.runner is None:
            from loom.tui.generation import Runner

            self.runner = Runner(self._on_generation, asyncio.get_running_loop())
        return self.runner

    async def action_generate(self) -> None:
        if (cursor := self._cursor()) is not None:
            await self._start_generation(node=cursor)

    async def action_regenerate(self) -> None:
        """New siblings of this node, made as it was made (its recorded model and settings)."""
        if (cursor := self._cursor()) is None:
            return
        parent = self.doc.nodes[cursor].get("parent")
        if parent is None:
            self.error("a root was not generated from anything: g generates its children")
            return
        self.goto(parent)  # the new siblings stream into the parent's children
        await self._start_generation(regenerate=cursor)

    async def _start_generation(self, **target: str) -> None:
        runner = self._runner()
        if runner.running:
            self.error("a generation is running (esc cancels it)")
            return
        try:
            request = self.settings.request(**target)
        except LoomError as exc:
            self.error(exc.message)
            return
        await self.wait_synced()  # the generation reads the file: it must hold our changes
        if self.session.pending:
            self.error("cannot generate until the document is saved (see the error above)")
            return
        self.streams = []
        self._written = ()
        self.query_one(ChildrenList).set_streams(self.streams)
        try:
            runner.start(self.session.path, request)
        except LoomError as exc:
            self.error(exc.message)
            return
        self.generating = True
        self.refresh_status()

    def _on_generation(self, item: Any) -> None:
        """An event from the running generation (on this loop), or its end."""
        from loom.generation import events as ev

        def stream(index: int) -> Stream:
            while len(self.streams) <= index:
                self.streams.append(Stream())
            return self.streams[index]

        if isinstance(item, ev.Planned):  # every row at once, before any request starts
            self.streams = [Stream(note=f"{model}: waiting") for model in item.models]
        elif isinstance(item, ev.BranchStarted):
            stream(item.index).note = item.model
        elif isinstance(item, ev.TextDelta):
            stream(item.index).text += item.text
        elif isinstance(item, ev.BranchFinished):
            branch = stream(item.index)
            branch.text = item.text or branch.text
            if item.error and item.error != "cancelled":
                branch.state, branch.note = "failed", item.error
            elif item.error or item.incomplete:
                branch.state, branch.note = "cancelled", "cut off"
            else:
                branch.state, branch.note = "done", item.finish_reason or ""
        elif isinstance(item, ev.Retrying):
            for index in item.indexes:
                stream(index).note = f"retrying in {item.delay:.0f} s ({item.reason})"
        elif isinstance(item, ev.Note):
            self.say(item.message)
        elif isinstance(item, ev.Written):
            self._written = tuple(item.node_ids)
        elif isinstance(item, Finished):
            self._finish_generation(item)
            return
        self.query_one(ChildrenList).set_streams(self.streams)
        if not isinstance(item, ev.TextDelta):
            self.refresh_status()

    def _finish_generation(self, done: Finished) -> None:
        self.generating = False
        kept = len(self._written)
        if done.error is not None:
            self.error(done.error.message)
        elif done.cancelled:
            self.say(f"cancelled: {kept} finished branch(es) kept")
        elif done.result is not None and (summary := done.result.error_summary()):
            self.error(summary)
        if not kept:
            self.streams = []
            self.query_one(ChildrenList).set_streams(self.streams)
        self.start_sync()  # read the children in; the streams give way to them then
        self._streams_arrived()  # (or now, if a sync already read them)
        self.refresh_status()

    def _streams_arrived(self) -> None:
        """After a sync: once the written children are in the document, drop their streams."""
        written = self._written and all(i in self.doc.nodes for i in self._written)
        if self.streams and written and not self.generating:
            self.streams = []
            self._written = ()
            self.query_one(ChildrenList).set_streams(self.streams)

    def action_gen_panel(self) -> None:
        from loom.tui.generation import explain, model_names, preset_names
        from loom.tui.screens.dialogs import GenerationPanel

        cursor = self.doc.cursor_id
        try:
            models, presets = model_names(), preset_names()
        except LoomError as exc:
            self.error(exc.message)
            return

        def explain_here(settings: Settings) -> str:
            if cursor is None or cursor not in self.doc.nodes:
                return "(an empty document: nothing to continue yet)"
            return explain(self.doc, cursor, settings)

        def apply(settings: Settings | None) -> None:
            if settings is not None:
                self.settings = settings
                self.refresh_status()

        self.push_screen(GenerationPanel(self.settings, models, presets, explain_here), apply)

    # ---- the command palette ---------------------------------------------------------------------

    def get_system_commands(self, screen: Screen[Any]) -> Any:
        for key in KEYS:
            if key.palette:
                yield SystemCommand(
                    key.description,
                    f"{key.display} · {key.group.lower()}",
                    _runner(self, key.action),
                )
        yield from super().get_system_commands(screen)


def _runner(app: LoomApp, action: str) -> Callable[[], Any]:
    async def run() -> None:
        await app.run_action(action)

    return run


def probability_legend(branch: BranchView) -> Text:
    """What the probability colours mean, painted with the branch view's own styles."""
    out = Text("p ")
    labels = [f"≥{b:g}" for b in BANDS] + [f"<{BANDS[-1]:g}"]
    for level, label in enumerate(labels):
        out.append(label, style=branch.get_component_rich_style(f"branch--prob-{level}"))
        out.append(" ")
    out.append("· plain: none recorded", style="dim")
    return out
