"""The Neovim plugin: time from a key press to the picker, on a 1k-node document.

Headless Neovim presses <C-Space> in a buffer bound to the document and times until
the picker opens (the `User LoomPicker` event), over several runs: once with the
buffer unchanged since the last sync, once after typing (the edit is synced first).
The baseline, measured in the same run against the same local fake provider (zero
latency, so loom's own cost shows): the `loom gen` process alone, and `loom sync`.

    python bench/bench_editor.py
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

import loom  # noqa: E402
from loom import ops  # noqa: E402

from fakeprovider import FakeProvider  # noqa: E402

RUNS = 15
N = 4
NODES = 1000

SCRIPT = r"""
local loom = require("loom")
loom.setup({ n = %(n)d })
local samples = { clean = {}, typed = {} }
local opened = false
vim.api.nvim_create_autocmd("User", { pattern = "LoomPicker", callback = function() opened = true end })
local function keys(k) vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(k, true, false, true), "mx", false) end
local function wait(cond) assert(vim.wait(60000, cond, 1), "timed out") end
local function idle() wait(function() local s = loom.state(0) return s and not s.busy end) end
local ok, err = pcall(function()
  vim.cmd("LoomOpen doc.loom.json")
  idle()
  for round = 0, %(runs)d do
    for _, kind in ipairs({ "clean", "typed" }) do
      if kind == "typed" then keys("A x<Esc>") end
      opened = false
      local start = vim.loop.hrtime()
      keys("<C-Space>")
      wait(function() return opened end)
      local ms = (vim.loop.hrtime() - start) / 1e6
      if round > 0 then table.insert(samples[kind], ms) end  -- round 0 warms caches
      keys("q")
      idle()
    end
  end
end)
if not ok then io.stderr:write(tostring(err) .. "\n") vim.cmd("cquit 1") end
local f = assert(io.open("samples.json", "w"))
f:write(vim.fn.json_encode(samples))
f:close()
vim.cmd("qall!")
"""


def user_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    bin_dir = str(Path(sys.executable).parent)
    return {**env, "LOOM_HOME": str(home), "PATH": bin_dir + os.pathsep + env["PATH"]}


def build(path: Path) -> None:
    """1,000 nodes: a 100-node branch, each of its nodes with 9 more children."""
    loom.new(path)
    with loom.edit(path) as doc:
        chain = ops.add_chain(doc, None, [(f" Step {i}.", "human", None) for i in range(100)])
        for node in chain:
            for _ in range(9):
                ops.add_child(doc, node.id, " Another way.", kind="model", move_cursor=False)
    assert len(loom.open(path)) == NODES


def process_ms(args: list[str], env: dict[str, str], cwd: Path, runs: int) -> float:
    samples = []
    for i in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(args, env=env, cwd=cwd, check=True, capture_output=True)
        if i:  # the first run warms caches
            samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> None:
    nvim = shutil.which("nvim")
    if nvim is None:
        print("bench_editor: skipped (Neovim is not installed)")
        return
    with tempfile.TemporaryDirectory() as tmp, FakeProvider() as fake:
        cwd = Path(tmp)
        env = user_env(cwd / "home")
        build(cwd / "doc.loom.json")
        count = len(loom.open(cwd / "doc.loom.json"))
        loom_cmd = [sys.executable, "-m", "loom"]
        subprocess.run(
            [*loom_cmd, "models", "add", "fake", "--provider", "openai", "--base-url",
             fake.openai_url, "--model", "m", "--kind", "base", "--key-env", "NO_KEY_NEEDED"],
            env=env, cwd=cwd, check=True, capture_output=True,
        )  # fmt: skip
        for args in (["models", "default", "fake"], ["use", "doc.loom.json"], ["sync", "doc.md"]):
            subprocess.run([*loom_cmd, *args], env=env, cwd=cwd, check=True, capture_output=True)

        gen = process_ms([*loom_cmd, "gen", "-n", str(N), "--json"], env, cwd, RUNS)
        sync = process_ms([*loom_cmd, "sync", "doc.md", "--json"], env, cwd, RUNS)
        (cwd / "bench.lua").write_text(SCRIPT % {"n": N, "runs": RUNS})
        result = subprocess.run(
            [nvim, "--headless", "--clean", "--cmd", f"set rtp^={ROOT / 'editors' / 'nvim'}",
             "-c", "luafile bench.lua"],
            env=env, cwd=cwd, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if result.returncode != 0:
            raise SystemExit(f"bench_editor: Neovim failed: {result.stderr}")
        samples = json.loads((cwd / "samples.json").read_text())
        clean = statistics.median(samples["clean"])
        typed = statistics.median(samples["typed"])

    print(f"key press -> picker, {count:,}-node document, n={N}, median of {RUNS} runs")
    print(f"  baseline: `loom gen -n {N}` process alone        {gen:7.1f} ms")
    print(f"            `loom sync` process alone           {sync:7.1f} ms")
    print(
        f"  <C-Space>, buffer unchanged (gen)             {clean:7.1f} ms  ({clean / gen:.2f}x gen)"
    )
    print(
        f"  <C-Space> after typing (sync, then gen)       {typed:7.1f} ms  "
        f"({typed / gen:.2f}x gen, {typed / (gen + sync):.2f}x gen + sync)"
    )


if __name__ == "__main__":
    main()
