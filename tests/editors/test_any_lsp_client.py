"""The README's "any LSP client" snippets, run in the real client against the real codeassist-lsp.

Emacs eglot (Debian's emacs-nox + elpa-eglot, installed by `make editor-deps`): the README block
is loaded, eglot connects, and completion-at-point inserts the server's suggestion.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .paths import ROOT, lsp_command

pytestmark = pytest.mark.slow

README = ROOT / "README.md"


def readme_block(name: str, lang: str) -> str:
    m = re.search(rf"<!-- tested: {name}\b[^\n]*-->\n```{lang}\n(.*?)```", README.read_text(), re.S)
    assert m, f"README.md has no tested {name} block"
    return m.group(1)


def test_emacs_eglot_block_completes_from_the_server(tmp_path: Path) -> None:
    emacs = shutil.which("emacs")
    if emacs is None:
        pytest.fail("emacs is not installed: run `make editor-deps` (apt-get install emacs-nox elpa-eglot)")
    block = readme_block("eglot", "elisp")
    assert '("codeassist-lsp"' in block
    snippet = tmp_path / "snippet.el"
    snippet.write_text(block.replace('("codeassist-lsp"', f'("{lsp_command()}" "--backend" "fake"'))
    result = tmp_path / "result.json"
    env = {**os.environ, "CODEASSIST_SNIPPET": str(snippet), "CODEASSIST_WORKDIR": str(tmp_path),
           "CODEASSIST_TEST_RESULT": str(result), "HOME": str(tmp_path)}
    script = Path(__file__).parent / "emacs" / "eglot_test.el"
    try:
        # -q, not -Q: Debian's site-start puts the elpa-eglot package on the load path
        proc = subprocess.run([emacs, "--batch", "-q", "-l", str(script)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail("batch Emacs did not finish the eglot test")
    assert result.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    got = json.loads(result.read_text())
    assert "error" not in got, got
    assert got["connected"] is True
    assert got["line"] == "value = fake_completion()"
