-- loom for Neovim. A buffer is bound to a document through `loom sync FILE`: the
-- buffer's file is the document's current branch as plain text, and every action
-- saves the buffer, lets `loom sync` turn its edits into nodes, runs the loom
-- command, then reloads the file loom rewrote. loom runs as a job, so the editor
-- never waits on it; its errors become one-line notifications.
local M = {}

local config = {
  cmd = { "loom" }, -- how to run loom, e.g. { "python3", "-m", "loom" }
  n = 4, -- continuations per generation
  gen_args = {}, -- extra `loom gen` flags, e.g. { "-m", "claude", "--max-tokens", "60" }
  keys = { "<C-Space>", "<Nul>" }, -- generate, in attached buffers (terminals send <Nul> for <C-Space>)
  picker = "float", -- or "select": vim.ui.select (telescope-ui-select, dressing.nvim…)
  tree = { width = 48, depth = 3 },
}

local buffers = {} -- bufnr -> { doc, file, cwd, busy, tree_buf, tree_win }

function M.setup(opts)
  for key, value in pairs(opts or {}) do
    if config[key] == nil then
      M.notify("unknown setup option " .. key)
    else
      config[key] = value
    end
  end
end

function M.config()
  return config
end

-- ---- messages and jobs -----------------------------------------------------------------

function M.notify(message, level)
  message = tostring(message):gsub("^loom: error: ", ""):gsub("%s*\n%s*", " ")
  vim.notify("loom: " .. message, level or vim.log.levels.ERROR)
end

local function decode(text)
  local ok, value = pcall(vim.fn.json_decode, text)
  if ok and type(value) == "table" then
    return value
  end
  return nil
end

-- What went wrong, in one line: loom's own message (the JSON error object on stdout) when it
-- said one, else the first line of stderr.
local function failure(code, stdout, stderr)
  local parsed = decode(stdout or "")
  if parsed and type(parsed.error) == "table" and parsed.error.message then
    return parsed.error.message
  end
  local lines = vim.split(stderr or "", "\n", { trimempty = true })
  if lines[1] then
    return lines[1]
  end
  return "loom exited with status " .. tostring(code)
end

-- Run `loom ARGS` for a bound buffer (its document with -f); on_done(code, stdout, stderr).
local function run(state, args, on_done, env)
  local argv = vim.deepcopy(config.cmd)
  vim.list_extend(argv, args)
  if state and state.doc then
    vim.list_extend(argv, { "-f", state.doc })
  end
  local out, err = {}, {}
  local ok, job = pcall(vim.fn.jobstart, argv, {
    cwd = state and state.cwd or nil,
    env = env,
    stdout_buffered = true,
    stderr_buffered = true,
    on_stdout = function(_, data)
      out = data
    end,
    on_stderr = function(_, data)
      err = data
    end,
    on_exit = function(_, code)
      vim.schedule(function()
        on_done(code, table.concat(out, "\n"), table.concat(err, "\n"))
      end)
    end,
  })
  if not ok or job <= 0 then
    vim.schedule(function()
      on_done(-1, "", "cannot run " .. tostring(argv[1]) .. ": is loom installed? (see :checkhealth loom)")
    end)
  end
end

local function finish(state)
  state.busy = nil
end

-- Run loom commands one after another (each `--json`), stopping at the first failure.
-- A step is an argument list, nil (skipped), or a function of the results so far.
-- on_partial(results, error): a failure that still made nodes (some branches of a
-- generation failed), after its one-line notification; without it the failure ends there.
local function steps(state, list, done, on_partial)
  local results = {}
  local function step(i)
    if i > #list then
      finish(state)
      local ok, message = pcall(done, results)
      if not ok then
        M.notify(message)
      end
      return
    end
    local args = list[i]
    if type(args) == "function" then
      args = args(results)
    end
    if not args then
      return step(i + 1)
    end
    args = vim.deepcopy(args)
    table.insert(args, "--json")
    run(state, args, function(code, stdout, stderr)
      if code ~= 0 then
        finish(state)
        M.notify(failure(code, stdout, stderr))
        local parsed = decode(stdout or "")
        local err = parsed and type(parsed.error) == "table" and parsed.error or nil
        local made = err and type(err.details) == "table" and err.details.nodes
        if on_partial and type(made) == "table" and #made > 0 then
          local ok, message = pcall(on_partial, results, err)
          if not ok then
            M.notify(message)
          end
        end
        return
      end
      results[i] = decode(stdout) or {}
      step(i + 1)
    end)
  end
  step(1)
end

-- ---- the bound buffer ------------------------------------------------------------------

local function bufnr(buf)
  if buf == nil or buf == 0 then
    return vim.api.nvim_get_current_buf()
  end
  return buf
end

local function bound(buf, quiet)
  local state = buffers[bufnr(buf)]
  if not state and not quiet then
    M.notify("this buffer is not bound to a loom document: :LoomAttach [DOC] or :LoomOpen DOC")
  end
  return state
end

-- Claim the buffer for one action at a time.
local function begin(state, what)
  if state.busy then
    M.notify("busy " .. state.busy .. "; try again when it is done", vim.log.levels.WARN)
    return false
  end
  state.busy = what
  return true
end

-- Write the buffer if it has unsaved edits; true when it did.
local function save(state)
  if not vim.api.nvim_buf_is_loaded(state.buf) or not vim.bo[state.buf].modified then
    return false
  end
  vim.api.nvim_buf_call(state.buf, function()
    vim.cmd("silent write")
  end)
  return true
end

-- Show the file loom rewrote. `:edit!` keeps the old text on the undo list ('undoreload'),
-- so `u` brings it back; edits typed while loom worked are never thrown away.
local function reload(state, tick, to_end)
  local buf = state.buf
  if not vim.api.nvim_buf_is_loaded(buf) then
    return
  end
  if tick and vim.api.nvim_buf_get_changedtick(buf) ~= tick then
    M.notify("the buffer changed while loom worked, so it was not reloaded: :LoomSync", vim.log.levels.WARN)
    return
  end
  vim.api.nvim_buf_call(buf, function()
    vim.cmd("silent edit!")
    if to_end then
      local last = vim.api.nvim_buf_line_count(buf)
      local line = vim.api.nvim_buf_get_lines(buf, last - 1, last, false)[1] or ""
      vim.api.nvim_win_set_cursor(0, { last, math.max(0, #line - 1) })
    end
  end)
end

local function refresh_tree(state)
  if not (state.tree_buf and vim.api.nvim_buf_is_valid(state.tree_buf)) then
    return
  end
  local width = state.tree_win and vim.api.nvim_win_is_valid(state.tree_win)
      and vim.api.nvim_win_get_width(state.tree_win)
    or config.tree.width
  run(state, { "tree", "--depth", tostring(config.tree.depth) }, function(code, stdout, stderr)
    if not vim.api.nvim_buf_is_valid(state.tree_buf) then
      return
    end
    local lines = code == 0 and vim.split(stdout, "\n", { trimempty = true }) or { failure(code, stdout, stderr) }
    vim.bo[state.tree_buf].modifiable = true
    vim.api.nvim_buf_set_lines(state.tree_buf, 0, -1, false, lines)
    vim.bo[state.tree_buf].modifiable = false
  end, { COLUMNS = tostring(width), NO_COLOR = "1" })
end

-- Save the buffer; returns false (and says why) if that failed, else the step that puts
-- its edits into the tree first (nil when there were none).
local function prologue(state)
  local ok, wrote = pcall(save, state)
  if not ok then
    finish(state)
    M.notify(wrote)
    return false
  end
  return wrote and { "sync", state.file } or nil
end

-- After a sync: tell what happened to edits that did not end up in the buffer.
local function report_sync(result)
  if type(result) == "table" and result.both_changed then
    M.notify(
      "the file and the document both changed: your edits are kept in node " .. tostring(result.edits),
      vim.log.levels.WARN
    )
  end
end

-- ---- binding ---------------------------------------------------------------------------

local function bind(buf, state)
  buffers[buf] = state
  vim.b[buf].loom_document = state.doc
  -- The file mirrors the branch exactly: no newline added at its end.
  vim.bo[buf].fixendofline = false
  for _, lhs in ipairs(config.keys or {}) do
    vim.keymap.set({ "n", "i" }, lhs, function()
      M.gen(buf)
    end, { buffer = buf, desc = "loom: generate continuations" })
  end
  vim.api.nvim_create_autocmd("BufWipeout", {
    buffer = buf,
    once = true,
    callback = function()
      buffers[buf] = nil
    end,
  })
end

-- Bind buffer BUF (its file) to document DOC (default: $LOOM_FILE, else the document last
-- used in the file's folder). opts.adopt: take an existing file's text as an edit.
function M.attach(buf, doc, opts)
  buf = bufnr(buf)
  local name = vim.api.nvim_buf_get_name(buf)
  if name == "" then
    M.notify("this buffer has no file: save it first (:w draft.md), or :LoomOpen DOC FILE")
    return
  end
  local state = buffers[buf]
    or {
      buf = buf,
      file = vim.fn.fnamemodify(name, ":p"),
      cwd = vim.fn.fnamemodify(name, ":p:h"),
    }
  if doc then
    state.doc = vim.fn.fnamemodify(doc, ":p")
  end
  if not begin(state, "attaching") then
    return
  end
  if prologue(state) == false then
    return
  end
  local tick = vim.api.nvim_buf_get_changedtick(buf)
  local args = { "sync", state.file }
  if opts and opts.adopt then
    table.insert(args, "--adopt")
  end
  steps(state, { args }, function(results)
    local result = results[1]
    state.doc = type(result.document) == "table" and result.document.file or state.doc
    bind(buf, state)
    report_sync(result)
    if result.written then
      reload(state, tick, false)
    end
    refresh_tree(state)
  end)
end

function M.detach(buf)
  buf = bufnr(buf)
  local state = buffers[buf]
  if not state then
    return
  end
  for _, lhs in ipairs(config.keys or {}) do
    pcall(vim.keymap.del, { "n", "i" }, lhs, { buffer = buf })
  end
  if state.tree_win and vim.api.nvim_win_is_valid(state.tree_win) then
    vim.api.nvim_win_close(state.tree_win, true)
  end
  buffers[buf] = nil
  vim.b[buf].loom_document = nil
end

-- Open document DOC's current branch as FILE (default: DOC without .loom.json, as .md).
function M.open(doc, file)
  if not doc or doc == "" then
    return M.notify("usage: :LoomOpen DOC [FILE]")
  end
  doc = vim.fn.fnamemodify(doc, ":p")
  if not file or file == "" then
    file = doc:gsub("%.loom%.json$", "") .. ".md" -- story.loom.json -> story.md
  end
  vim.cmd("edit " .. vim.fn.fnameescape(file))
  M.attach(0, doc)
end

-- ---- actions ---------------------------------------------------------------------------

function M.sync(buf)
  local state = bound(buf)
  if not state or not begin(state, "syncing") then
    return
  end
  if prologue(state) == false then
    return
  end
  local tick = vim.api.nvim_buf_get_changedtick(state.buf)
  steps(state, { { "sync", state.file } }, function(results)
    report_sync(results[1])
    if results[1].written then
      reload(state, tick, false)
    end
    refresh_tree(state)
  end)
end

local function preview(text, width)
  local flat = text:gsub("%s+", " ")
  if vim.fn.strdisplaywidth(flat) > width then
    flat = vim.fn.strcharpart(flat, 0, width - 1) .. "…"
  end
  return flat
end

-- A floating list of the children, each with its whole text: 1-9 or <CR> picks, j/k move,
-- q or <Esc> closes (the children stay in the tree: :LoomPick shows them again).
local function float_picker(children, on_choice)
  local lines, starts, headers = {}, {}, {}
  for i, child in ipairs(children) do
    starts[i] = #lines + 1
    headers[#lines + 1] = true
    table.insert(lines, string.format("%d  %s", i, child.label))
    for _, line in ipairs(vim.split(child.text, "\n")) do
      table.insert(lines, "   " .. line)
    end
    table.insert(lines, "")
  end
  local pbuf = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_lines(pbuf, 0, -1, false, lines)
  vim.bo[pbuf].modifiable = false
  vim.bo[pbuf].bufhidden = "wipe"
  vim.bo[pbuf].filetype = "loompicker"
  local width = math.max(20, math.floor(vim.o.columns * 0.8))
  local height = math.max(3, math.min(#lines, math.floor(vim.o.lines * 0.7)))
  local win = vim.api.nvim_open_win(pbuf, true, {
    relative = "editor",
    width = width,
    height = height,
    row = math.floor((vim.o.lines - height) / 2),
    col = math.floor((vim.o.columns - width) / 2),
    style = "minimal",
    border = "rounded",
  })
  vim.wo[win].wrap = true
  vim.wo[win].cursorline = true
  local ns = vim.api.nvim_create_namespace("loom_picker")
  for line in pairs(headers) do
    vim.api.nvim_buf_add_highlight(pbuf, ns, "Title", line - 1, 0, -1)
  end
  local function item_at_cursor()
    local row = vim.api.nvim_win_get_cursor(win)[1]
    local found = 1
    for i, start in ipairs(starts) do
      if start <= row then
        found = i
      end
    end
    return found
  end
  local function close()
    if vim.api.nvim_win_is_valid(win) then
      vim.api.nvim_win_close(win, true)
    end
  end
  local function choose(i)
    close()
    if children[i] then
      on_choice(children[i], i)
    end
  end
  local function move(step)
    local i = math.max(1, math.min(#children, item_at_cursor() + step))
    vim.api.nvim_win_set_cursor(win, { starts[i], 0 })
  end
  local map = function(lhs, fn)
    vim.keymap.set("n", lhs, fn, { buffer = pbuf, nowait = true })
  end
  for i = 1, math.min(9, #children) do
    map(tostring(i), function()
      choose(i)
    end)
  end
  map("<CR>", function()
    choose(item_at_cursor())
  end)
  map("j", function()
    move(1)
  end)
  map("k", function()
    move(-1)
  end)
  map("q", close)
  map("<Esc>", close)
  return pbuf, win
end

-- Show NODES (loom's JSON node objects) in the picker; picking one puts its branch in the buffer.
local function show_picker(state, nodes)
  if #nodes == 0 then
    return M.notify("no children to pick from", vim.log.levels.WARN)
  end
  local children = {}
  for i, node in ipairs(nodes) do
    local kind = node.kind ~= "human" and ("  " .. tostring(node.kind)) or ""
    children[i] = { id = node.id, text = node.text or "", label = node.id:sub(1, 6) .. kind }
  end
  local on_choice = function(child)
    M.choose(state.buf, child.id)
  end
  if config.picker == "select" then
    vim.ui.select(children, {
      prompt = "loom: continue with",
      format_item = function(child)
        return preview(child.text, math.max(20, vim.o.columns - 12))
      end,
    }, function(child)
      if child then
        on_choice(child)
      end
    end)
  else
    float_picker(children, on_choice)
  end
  vim.cmd("doautocmd <nomodeline> User LoomPicker")
end

-- Generate N continuations from the end of the buffer and pick one.
function M.gen(buf, n)
  local state = bound(buf)
  if not state then
    return
  end
  n = tonumber(n or config.n)
  if not n or n < 1 or n ~= math.floor(n) then
    return M.notify("the number of continuations must be a whole number from 1")
  end
  if vim.fn.mode():sub(1, 1) == "i" then
    vim.cmd("stopinsert")
  end
  if not begin(state, "generating") then
    return
  end
  if prologue(state) == false then
    return
  end
  local tick = vim.api.nvim_buf_get_changedtick(state.buf)
  -- One process: sync the file's edits in, generate from its end, sync again.
  local gen = { "gen", "--sync", state.file, "-n", tostring(math.floor(n)) }
  vim.list_extend(gen, config.gen_args)
  steps(state, { gen }, function(results)
    local result = results[1]
    local synced = type(result.sync) == "table" and result.sync or {}
    report_sync(synced.before)
    if (type(synced.before) == "table" and synced.before.written)
      or (type(synced.after) == "table" and synced.after.written) then
      reload(state, tick, true)
    end
    refresh_tree(state)
    for _, warning in ipairs(result.warnings or {}) do
      M.notify(warning, vim.log.levels.WARN)
    end
    show_picker(state, result.nodes or {})
  end, function(_, err)
    -- Some branches failed (already said): the others are children to pick from.
    reload(state, tick, true)
    refresh_tree(state)
    show_picker(state, err.details.nodes)
  end)
end

-- Pick among the current node's children (e.g. after closing the picker).
function M.pick(buf)
  local state = bound(buf)
  if not state or not begin(state, "listing") then
    return
  end
  local first = prologue(state)
  if first == false then
    return
  end
  steps(state, { first, { "ls" } }, function(results)
    show_picker(state, results[2].nodes or {})
  end)
end

-- Make NODE current and put its branch in the buffer.
function M.choose(buf, node)
  local state = bound(buf)
  if not state or not begin(state, "moving") then
    return
  end
  local first = prologue(state)
  if first == false then
    return
  end
  local tick = vim.api.nvim_buf_get_changedtick(state.buf)
  steps(state, { first, { "goto", node }, { "sync", state.file } }, function(results)
    report_sync(results[1])
    if results[3].written then
      reload(state, tick, true)
    end
    refresh_tree(state)
  end)
end

-- up [N], down [I], next, prev, undo, redo: change the tree, then show its branch.
function M.navigate(buf, verb, arg)
  local state = bound(buf)
  if not state then
    return
  end
  if arg ~= nil and not tonumber(arg) then
    return M.notify(verb .. " takes a number, not " .. tostring(arg))
  end
  if not begin(state, verb) then
    return
  end
  local first = prologue(state)
  if first == false then
    return
  end
  local tick = vim.api.nvim_buf_get_changedtick(state.buf)
  local command = { verb, arg and tostring(arg) or nil }
  steps(state, { first, command, { "sync", state.file } }, function(results)
    report_sync(results[1])
    if results[3].written then
      reload(state, tick, true)
    end
    refresh_tree(state)
  end)
end

-- A side split with `loom tree` around the current node, redrawn after every action.
function M.tree(buf)
  local state = bound(buf)
  if not state then
    return
  end
  if not (state.tree_win and vim.api.nvim_win_is_valid(state.tree_win)) then
    local from = vim.api.nvim_get_current_win()
    vim.cmd("botright " .. tostring(config.tree.width) .. "vsplit")
    state.tree_win = vim.api.nvim_get_current_win()
    state.tree_buf = vim.api.nvim_create_buf(false, true)
    vim.api.nvim_win_set_buf(state.tree_win, state.tree_buf)
    vim.bo[state.tree_buf].bufhidden = "wipe"
    vim.bo[state.tree_buf].filetype = "loomtree"
    vim.bo[state.tree_buf].modifiable = false
    vim.wo[state.tree_win].wrap = false
    vim.wo[state.tree_win].number = false
    vim.wo[state.tree_win].winfixwidth = true
    vim.api.nvim_set_current_win(from)
  end
  refresh_tree(state)
end

-- For tests and statuslines: the state of a bound buffer.
function M.state(buf)
  return buffers[bufnr(buf)]
end

return M
