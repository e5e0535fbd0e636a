"""The Neovim plugin (editors/nvim) under headless Neovim, against real loom processes.

Each test writes a Lua script that drives the editor with scripted keys and commands
and asserts in Lua; Neovim exits non-zero with the failed assertion on stderr. Models
are the real local HTTP server of tests/fakeprovider.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, Loom
from fakeprovider import Fail, FakeProvider, Reply

NVIM = shutil.which("nvim")
pytestmark = pytest.mark.skipif(
    NVIM is None,
    reason="Neovim is not installed (`make test` installs Debian's neovim when run as root with apt)",
)
PLUGIN = ROOT / "editors" / "nvim"
KEY = "sk-test-0123456789abcdef"

# Helpers every script gets. Notifications are collected (vim.notify is the seam that
# notification plugins replace too), and `idle` waits for the buffer's loom job chain.
PRELUDE = r"""
local loom = require("loom")
notes = {}
vim.notify = function(msg, level) table.insert(notes, { msg = msg, level = level }) end
function wait(cond, what)
  if not vim.wait(60000, cond, 10) then error("timed out waiting for " .. what, 2) end
end
function idle()
  wait(function() local s = loom.state(0) return s and not s.busy end, "loom to finish")
end
function keys(k)
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(k, true, false, true), "mx", false)
end
function text(buf) return table.concat(vim.api.nvim_buf_get_lines(buf or 0, 0, -1, false), "\n") end
function file(path) local f = assert(io.open(path, "rb")) local s = f:read("*a") f:close() return s end
function eq(got, want, what)
  if got ~= want then error((what or "value") .. ": got " .. vim.inspect(got) .. ", want " .. vim.inspect(want), 2) end
end
function loom_json(args)
  local out = vim.fn.system(vim.list_extend({ "loom" }, vim.list_extend(args, { "--json" })))
  assert(vim.v.shell_error == 0, out)
  return vim.fn.json_decode(out)
end
function tree_lines() return vim.api.nvim_buf_get_lines(loom.state(0).tree_buf, 0, -1, false) end
"""

WRAPPER = r"""
local ok, err = xpcall(function()
{body}
end, debug.traceback)
if not ok then
  io.stderr:write(err .. "\n")
  vim.cmd("cquit 1")
end
vim.cmd("qall!")
"""


def nvim(
    cwd: Path, body: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a Lua test body in headless Neovim with the plugin on its runtimepath."""
    script = cwd / "test_plugin.lua"
    script.write_text(PRELUDE + WRAPPER.replace("{body}", body))
    bin_dir = str(Path(sys.executable).parent)  # where the venv's `loom` command is
    full_env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"], **(env or {})}
    assert NVIM is not None
    return subprocess.run(
        [NVIM, "--headless", "--clean", "--cmd", f"set rtp^={PLUGIN}", "-c", f"luafile {script}"],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def passes(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, f"Neovim said:\n{result.stderr}"


@pytest.fixture
def story(loom: Loom) -> Loom:
    """A root with two children; the cursor on the first."""
    loom.ok("new", "s.loom.json", "--text", "The lighthouse keeper")
    first = loom.ok("add", " woke.").stdout.strip()
    loom.ok("add", "--stay", "--sibling", " slept.")
    loom.ok("goto", first)
    return loom


@pytest.fixture
def woven(story: Loom, fake_provider: FakeProvider) -> Loom:
    """The story plus a default base model on the local fake provider."""
    fake_provider.api_key = KEY
    story.ok(
        "models", "add", "base", "--provider", "openai", "--base-url", fake_provider.openai_url,
        "--model", "base-1", "--key-env", "FAKE_KEY", "--kind", "base",
    )  # fmt: skip
    story.ok("models", "default", "base")
    return story


def test_open_navigate_tree_and_undo_keep_the_buffer_and_its_undo(story: Loom) -> None:
    body = r"""
  vim.cmd("LoomOpen s.loom.json")
  idle()
  eq(text(), "The lighthouse keeper woke.", "the opened branch")
  eq(vim.fn.expand("%:t"), "s.md", "the file LoomOpen chose")
  vim.cmd("LoomTree")
  wait(function() return #tree_lines() >= 3 end, "the tree split")
  assert(vim.fn.winnr("$") == 2, "LoomTree opens one side split")
  assert(tree_lines()[2]:find("●", 1, true), "the current node is marked: " .. vim.inspect(tree_lines()))

  vim.cmd("LoomUp") idle()
  eq(text(), "The lighthouse keeper", "after LoomUp")
  vim.cmd("LoomDown 2") idle()
  eq(text(), "The lighthouse keeper slept.", "after LoomDown 2")
  wait(function() return tree_lines()[3]:find("●", 1, true) ~= nil end, "the tree to follow")
  vim.cmd("LoomPrev") idle()
  eq(text(), "The lighthouse keeper woke.", "after LoomPrev")
  vim.cmd("LoomNext") idle()
  eq(text(), "The lighthouse keeper slept.", "after LoomNext")
  eq(vim.fn.getcurpos()[2], 1)

  -- The buffer's own undo takes back what loom put in it.
  vim.cmd("normal! u")
  eq(text(), "The lighthouse keeper woke.", "u after a reload")
  vim.cmd("normal! \18")  -- <C-r>
  eq(text(), "The lighthouse keeper slept.", "<C-r> after u")

  -- Typed text becomes a node before the next action.
  keys("A It rained.<Esc>")
  vim.cmd("LoomUp") idle()
  eq(text(), "The lighthouse keeper slept.", "up from the typed node")
  local kids = loom_json({ "ls" }).nodes
  eq(#kids, 1, "children of the slept node") eq(kids[1].text, " It rained.")
  eq(kids[1].kind, "human")

  -- LoomUndo undoes the last tree change (the typed node), and the buffer follows.
  vim.cmd("LoomDown") idle()
  eq(text(), "The lighthouse keeper slept. It rained.")
  vim.cmd("LoomUndo") idle()
  eq(text(), "The lighthouse keeper slept.", "after LoomUndo")
  eq(#loom_json({ "ls" }).nodes, 0, "the typed node is undone")
  eq(file("s.md"), "The lighthouse keeper slept.", "the file on disk")
  eq(#notes, 0, "notifications: " .. vim.inspect(notes))
"""
    passes(nvim(story.cwd, body))


def test_ctrl_space_generates_and_picking_puts_the_branch_in_the_buffer(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    body = r"""
  vim.cmd("LoomOpen s.loom.json draft.txt")
  idle()
  vim.cmd("LoomTree") idle()
  local opened = false
  vim.api.nvim_create_autocmd("User", { pattern = "LoomPicker", callback = function() opened = true end })
  keys("A Then<Esc>")
  keys("<C-Space>")
  wait(function() return opened end, "the picker")
  local picker = vim.api.nvim_get_current_buf()
  eq(vim.bo[picker].filetype, "loompicker")
  assert(vim.api.nvim_win_get_config(0).relative ~= "", "the picker is a floating window")
  local shown = text(picker)
  local kids = loom_json({ "ls" }).nodes
  eq(#kids, 3, "children generated (setup n = 3)")
  for i, kid in ipairs(kids) do
    assert(shown:find(kid.text, 1, true), "the picker previews child " .. i .. ":\n" .. shown)
  end
  -- The typed text was saved as a node first, and generation continued from it.
  eq(loom_json({ "show" }).node.text, " Then")

  keys("j")
  keys("<CR>")
  idle()
  eq(text(), "The lighthouse keeper woke. Then" .. kids[2].text, "the picked branch")
  eq(file("draft.txt"), text(), "the file matches the buffer")
  eq(loom_json({ "show" }).node.id, kids[2].id, "the cursor moved to the pick")
  local row = vim.api.nvim_win_get_cursor(0)[1]
  eq(row, vim.api.nvim_buf_line_count(0), "the cursor is at the end")
  wait(function()
    for _, line in ipairs(tree_lines()) do
      if line:find("●", 1, true) and line:find(kids[2].id:sub(1, 4), 1, true) then return true end
    end
  end, "the tree to show the pick")

  -- :LoomGen 2 and the picker closed with q: the children stay, the buffer is unchanged.
  opened = false
  vim.cmd("LoomGen 2")
  wait(function() return opened end, "the second picker")
  keys("q")
  eq(vim.bo.filetype ~= "loompicker", true, "q closes the picker")
  eq(#loom_json({ "ls" }).nodes, 2)
  eq(text(), file("draft.txt"))
  -- :LoomPick shows them again; a digit picks directly.
  opened = false
  vim.cmd("LoomPick")
  wait(function() return opened end, "the picker again")
  keys("2") idle()
  eq(loom_json({ "show" }).text, text(), "the second pick")
  eq(#notes, 0, "notifications: " .. vim.inspect(notes))
"""
    passes(nvim(woven.cwd, "  loom.setup({ n = 3 })\n" + body, env={"FAKE_KEY": KEY}))
    # One request per generation, from the end of the buffer's text.
    assert fake_provider.requests[0].body["prompt"] == "The lighthouse keeper woke. Then"


def test_errors_are_one_line_notifications(woven: Loom, fake_provider: FakeProvider) -> None:
    fake_provider.script(*[Fail(500)] * 20)
    body = r"""
  vim.cmd("LoomOpen s.loom.json")
  idle()
  keys("<C-Space>")
  wait(function() return #notes > 0 end, "an error")
  idle()
  eq(#notes, 1, "one notification: " .. vim.inspect(notes))
  eq(notes[1].level, vim.log.levels.ERROR)
  assert(notes[1].msg:match("^loom: "), notes[1].msg)
  assert(not notes[1].msg:find("\n"), "one line: " .. notes[1].msg)
  assert(not notes[1].msg:find("traceback", 1, true) and not notes[1].msg:find("stack", 1, true), notes[1].msg)
  eq(text(), "The lighthouse keeper woke.", "the buffer is untouched")

  -- Without a document, and at the root: still one line each, and nothing breaks.
  vim.cmd("enew")
  vim.cmd("LoomUp")
  assert(notes[2].msg:find("not bound", 1, true), notes[2].msg)
  vim.cmd("buffer s.md")
  vim.cmd("LoomUp") idle()
  vim.cmd("LoomUp") idle()
  assert(notes[3].msg:find("root", 1, true), vim.inspect(notes))
  vim.cmd("LoomDown x")
  assert(notes[4].msg:find("number", 1, true), vim.inspect(notes))
"""
    passes(nvim(woven.cwd, body, env={"FAKE_KEY": KEY}))


def test_when_some_branches_fail_the_others_are_offered_in_the_picker(
    woven: Loom, fake_provider: FakeProvider
) -> None:
    woven.ok(
        "models", "add", "claude", "--provider", "anthropic", "--base-url",
        fake_provider.anthropic_url, "--model", "claude-x", "--key-env", "FAKE_KEY",
    )  # fmt: skip
    fake_provider.script(Reply([" kept"], finish_reason="stop"), Fail(400, message="refused"))
    body = r"""
  vim.cmd("LoomOpen s.loom.json")
  idle()
  local opened = false
  vim.api.nvim_create_autocmd("User", { pattern = "LoomPicker", callback = function() opened = true end })
  keys("<C-Space>")
  wait(function() return opened end, "the picker with the branch that worked")
  eq(#notes, 1, "the failure is said once: " .. vim.inspect(notes))
  assert(notes[1].msg:find("1 of 2", 1, true), notes[1].msg)
  local kids = loom_json({ "ls" }).nodes
  eq(#kids, 1, "the branch that worked was kept")
  assert(text(vim.api.nvim_get_current_buf()):find(kids[1].text, 1, true), "it is in the picker")
"""
    setup = '  loom.setup({ n = 1, gen_args = { "-m", "base", "-m", "claude" } })\n'
    passes(nvim(woven.cwd, setup + body, env={"FAKE_KEY": KEY}))


def test_a_missing_loom_command_is_reported_not_thrown(story: Loom) -> None:
    body = r"""
  loom.setup({ cmd = { "no-such-loom-command" } })
  vim.cmd("edit s.md")
  vim.cmd("LoomAttach s.loom.json")
  wait(function() return #notes > 0 end, "the error")
  assert(notes[1].msg:find("cannot run no-such-loom-command", 1, true), notes[1].msg)
"""
    passes(nvim(story.cwd, body))


def test_checkhealth_finds_loom_and_the_default_model(woven: Loom) -> None:
    body = r"""
  vim.cmd("checkhealth loom")
  local report = text()
  assert(report:find("loom", 1, true), report)
  assert(report:find("OK", 1, true) and report:find("default model base", 1, true), report)
  assert(not report:find("ERROR", 1, true), report)
  loom.setup({ cmd = { "no-such-loom-command" } })
  vim.cmd("checkhealth loom")
  assert(text():find("ERROR", 1, true), text())
"""
    passes(nvim(woven.cwd, body, env={"FAKE_KEY": KEY}))


def test_attach_refuses_a_file_loom_did_not_write_unless_told(story: Loom) -> None:
    (story.cwd / "notes.md").write_text("my own notes")
    body = r"""
  vim.cmd("edit notes.md")
  vim.cmd("LoomAttach s.loom.json")
  wait(function() return #notes > 0 end, "the refusal")
  assert(notes[1].msg:find("--adopt", 1, true), notes[1].msg)
  assert(loom.state(0) == nil or loom.state(0).busy == nil)
  eq(file("notes.md"), "my own notes")
  vim.cmd("LoomAttach! s.loom.json")
  idle()
  eq(loom_json({ "show" }).text, "my own notes", "adopted as the branch")
"""
    passes(nvim(story.cwd, body))
