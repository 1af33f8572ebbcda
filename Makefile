# Two commands for a fresh machine: `make demo` and `make test`.
# Each creates .venv if missing and installs torch==2.13.0 first: that pin takes the CPU wheel;
# an unpinned torch would pull a multi-GB CUDA build.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PACKAGES := cli model lsp training quantization remote evaluation

.PHONY: demo test test-deps editor-apt editor-deps lint typecheck pytest install clean image-test

# pip byte-compiles site-packages here on purpose: with PYTHONDONTWRITEBYTECODE=1 (set on these
# machines) nothing else ever writes the .pyc files, and every process the tests start would
# compile torch from source (--no-compile made a clean clone's pytest 10.5 -> 16.5 min).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,train]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@echo "--- inline completion through the language server (codeassist lsp), embedded default model, in a small project ---"
	rm -rf $(VENV)/demo && $(PY) -m codeassist.lsp.demo --example $(VENV)/demo

# mypy, pyright and jedi cannot follow setuptools' editable import hook; they read the packages
# through codeassist/, the committed folder of relative links (tests/test_navigation.py checks it).
# .mypy-src is the old folder of links, kept one session for scripts that still make it.
.mypy-src: Makefile
	rm -rf .mypy-src && mkdir -p .mypy-src/codeassist
	for p in $(PACKAGES); do ln -s ../../$$p .mypy-src/codeassist/$$p; done

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# mypy's cache lives beside pip's, outside the checkout: a fresh clone type-checks in seconds
# instead of minutes (253 s cold against 4 s warm, measured), and a stale cache is only slower.
MYPY_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/codeassist-mypy

typecheck: $(STAMP)
	$(VENV)/bin/mypy --cache-dir $(MYPY_CACHE) $(foreach p,$(PACKAGES),-p codeassist.$(p))

# Debian's Neovim 0.7 for the LSP client tests (the >= 0.11 one comes from the test extra's wheel),
# and curl for the team server's curl example. Installs only what is missing; where apt-get is
# unavailable it says so, and the tests that need them fail saying what is missing.
test-deps:
	@missing=""; [ -x /usr/bin/nvim ] || missing=" neovim"; command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	[ -z "$$missing" ] || { command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq $$missing >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && \
	    apt-get install -y -qq $$missing >/dev/null 2>&1; }; }; } || \
	  echo "test-deps: could not install$$missing; the tests that need it will fail"

# The editor tests' tools (tests/editors): Debian's chromium, ripgrep, emacs with eglot, and the headers that
# code-server's native modules build against; the VS Code extension's npm packages and code-server
# with playwright-core, each `npm ci` from its committed lockfile and redone only when that changes.
# Without root or apt-get the packages are not installed, and the editor tests fail saying what is missing.
EXT := vscode-extension
EDITOR_APT := chromium ripgrep g++ make pkg-config libkrb5-dev libx11-dev libxkbfile-dev libsecret-1-dev emacs-nox elpa-eglot

editor-apt: test-deps  # after it: two apt-get runs at once would collide on apt's lock
	@missing=$$(for p in $(EDITOR_APT); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	[ -z "$$missing" ] || { echo "editor-apt: installing $$missing"; \
	  { apt-get install -y -qq --no-install-recommends $$missing >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }; } || \
	  echo "editor-apt: could not install $$missing; the editor tests will fail"; }

$(EXT)/node_modules/.ci-stamp: $(EXT)/package-lock.json | editor-apt
	cd $(EXT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(EXT)/e2e/node_modules/.ci-stamp: $(EXT)/e2e/package-lock.json | editor-apt
	$(EXT)/e2e/install.sh >/dev/null
	touch $@

editor-deps: test-deps $(EXT)/node_modules/.ci-stamp $(EXT)/e2e/node_modules/.ci-stamp

pytest: $(STAMP) test-deps editor-deps
	$(PY) -m pytest -q

test: lint typecheck pytest

# The CPU image built with podman on a locally made Debian base and run (deploy/build-local-image.sh;
# minutes: the torch install dominates), and the CUDA image up to its torch stage. Needs root for
# apt-get and podman; .ci/run calls it after `make test`.
image-test: $(STAMP)
	CODEASSIST_IMAGE_TEST=1 $(PY) -m pytest -q tests/deploy/test_image.py

clean:
	rm -rf $(VENV) .mypy-src .mypy_cache .ruff_cache .pytest_cache
