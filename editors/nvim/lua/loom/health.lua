-- :checkhealth loom — is the loom command there, and can it generate?
local M = {}

-- vim.health (0.9+) or the `health` module of 0.7/0.8.
local health = vim.health or require("health")
local start = health.start or health.report_start
local ok = health.ok or health.report_ok
local warn = health.warn or health.report_warn
local fail = health.error or health.report_error
local info = health.info or health.report_info

local function run(argv)
  local output = vim.fn.system(argv)
  return vim.v.shell_error, output
end

function M.check()
  start("loom")
  if vim.fn.has("nvim-0.7") == 0 then
    fail("Neovim 0.7 or newer is needed")
    return
  end
  local cmd = vim.deepcopy(require("loom").config().cmd)
  if vim.fn.executable(cmd[1]) == 0 then
    fail(
      "`" .. cmd[1] .. "` is not an executable on PATH",
      { "install loom (pip install loom, or `make` in its repository) and put it on PATH",
        "or point the plugin at it: require('loom').setup({ cmd = { 'python3', '-m', 'loom' } })" }
    )
    return
  end
  local version_argv = vim.deepcopy(cmd)
  table.insert(version_argv, "--version")
  local code, version = run(version_argv)
  if code ~= 0 then
    fail("`" .. table.concat(version_argv, " ") .. "` failed: " .. vim.trim(version))
    return
  end
  ok(vim.trim(version) .. " (" .. vim.fn.exepath(cmd[1]) .. ")")

  local models_argv = vim.deepcopy(cmd)
  vim.list_extend(models_argv, { "models", "--json" })
  local models_code, models_out = run(models_argv)
  local parsed = models_code == 0 and pcall(vim.fn.json_decode, models_out)
    and vim.fn.json_decode(models_out)
  if type(parsed) ~= "table" or type(parsed.models) ~= "table" then
    warn("could not list the models (`loom models --json` failed): " .. vim.trim(models_out))
    return
  end
  local default
  for _, model in ipairs(parsed.models) do
    if model.name == parsed.default then
      default = model
    end
  end
  if not default then
    warn("no default model: choose one with `loom models default NAME`")
  elseif default.usable then
    ok("default model " .. default.name .. ": " .. tostring(default.status))
  else
    fail(
      "the default model " .. default.name .. " cannot be used: " .. tostring(default.status),
      { "fix it (often an API key in the environment), or `loom models default NAME`" }
    )
  end
  local gen_args = require("loom").config().gen_args
  if #gen_args > 0 then
    info("`loom gen` runs with: " .. table.concat(gen_args, " "))
  end
end

return M
