# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv if missing and installs torch==2.13.0 first: that pin takes the CPU wheel;
# an unpinned torch would pull a multi-GB CUDA build.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PACKAGES := cli model lsp training quantization remote

.PHONY: demo test test-deps lint typecheck pytest install clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@printf 'import os\n\n\ndef read_lines(path):\n    """Return the lines of a text file."""\n    with open(path) as f:\n        ' > $(VENV)/demo_snippet.py
	@echo "--- snippet ($(VENV)/demo_snippet.py) ---"; cat $(VENV)/demo_snippet.py; echo; echo "--- inline completion through the language server (codeassist lsp), embedded default model ---"
	$(PY) -m codeassist.lsp.demo $(VENV)/demo_snippet.py

# mypy cannot follow setuptools' package-dir mapping, so it reads the packages through links
.mypy-src: Makefile
	rm -rf .mypy-src && mkdir -p .mypy-src/codeassist
	for p in $(PACKAGES); do ln -s ../../$$p .mypy-src/codeassist/$$p; done

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP) .mypy-src
	MYPYPATH=.mypy-src $(VENV)/bin/mypy $(foreach p,$(PACKAGES),-p codeassist.$(p))

# Debian's Neovim 0.7 for the LSP client tests (the >= 0.11 one comes from the test extra's wheel).
# Installs only when missing; harmless where apt-get is unavailable (that test then skips, saying why).
test-deps:
	@[ -x /usr/bin/nvim ] || { command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq neovim >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && \
	    apt-get install -y -qq neovim >/dev/null 2>&1; }; }; } || \
	  echo "test-deps: could not install Debian's neovim; the Neovim 0.7 test will skip"

pytest: $(STAMP) test-deps
	$(PY) -m pytest -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy-src .mypy_cache .ruff_cache .pytest_cache
