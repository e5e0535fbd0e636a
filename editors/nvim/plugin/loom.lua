-- loom for Neovim: weave a document's branch from the buffer you are writing in.
-- The commands are defined here; lua/loom is loaded on first use.
if vim.g.loaded_loom then
  return
end
vim.g.loaded_loom = true

local function loom()
  return require("loom")
end

local function count(opts)
  return opts.args ~= "" and opts.args or nil
end

local commands = {
  LoomOpen = {
    function(o)
      loom().open(o.fargs[1], o.fargs[2])
    end,
    { nargs = "+", complete = "file", desc = "Open a loom document's branch as a file: DOC [FILE]" },
  },
  LoomAttach = {
    function(o)
      loom().attach(0, count(o), { adopt = o.bang })
    end,
    { nargs = "?", bang = true, complete = "file", desc = "Bind this buffer's file to a loom document" },
  },
  LoomDetach = {
    function()
      loom().detach(0)
    end,
    { desc = "Unbind this buffer from its loom document" },
  },
  LoomSync = {
    function()
      loom().sync(0)
    end,
    { desc = "Save the buffer's edits into the tree, or show the tree's branch" },
  },
  LoomGen = {
    function(o)
      loom().gen(0, count(o))
    end,
    { nargs = "?", desc = "Generate N continuations from the end of the buffer and pick one" },
  },
  LoomPick = {
    function()
      loom().pick(0)
    end,
    { desc = "Pick one of the current node's children" },
  },
  LoomUp = {
    function(o)
      loom().navigate(0, "up", count(o))
    end,
    { nargs = "?", desc = "Move to the parent (or N levels up)" },
  },
  LoomDown = {
    function(o)
      loom().navigate(0, "down", count(o))
    end,
    { nargs = "?", desc = "Move to child I (default: the last visited)" },
  },
  LoomNext = {
    function()
      loom().navigate(0, "next")
    end,
    { desc = "Move to the next sibling" },
  },
  LoomPrev = {
    function()
      loom().navigate(0, "prev")
    end,
    { desc = "Move to the previous sibling" },
  },
  LoomUndo = {
    function()
      loom().navigate(0, "undo")
    end,
    { desc = "Undo the last change to the tree" },
  },
  LoomRedo = {
    function()
      loom().navigate(0, "redo")
    end,
    { desc = "Redo the last undone change to the tree" },
  },
  LoomTree = {
    function()
      loom().tree(0)
    end,
    { desc = "Show the tree around the current node in a side split" },
  },
}

for name, spec in pairs(commands) do
  vim.api.nvim_create_user_command(name, spec[1], spec[2])
end
