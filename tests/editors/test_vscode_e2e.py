"""The packaged extension in a real VS Code: code-server, driven by Debian's headless Chromium.

The driver (vscode-extension/e2e/run.mjs) installs the .vsix, opens a Python file, types, waits for
ghost text from the real codeassist-lsp (its deterministic fake backend) in
`.ghost-text-decoration`, accepts it with Tab, saves, and checks the file; then disables Python
from the command palette and checks the status bar. Screenshots go to test-artifacts/vscode/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .paths import ARTIFACTS, EXTENSION, lsp_command

pytestmark = pytest.mark.slow

E2E = EXTENSION / "e2e"
CHROMIUM = Path("/usr/bin/chromium")


def test_ghost_text_in_code_server_is_accepted_with_tab(vsix: Path, tmp_path: Path) -> None:
    if not (E2E / "node_modules" / "code-server" / "out" / "node" / "entry.js").exists():
        pytest.fail("code-server is not installed: run `make editor-deps` (vscode-extension/e2e/install.sh)")
    if not CHROMIUM.exists():
        pytest.fail("chromium is not installed: run `make editor-deps` (apt-get install chromium)")
    artifacts = ARTIFACTS / "vscode"
    shutil.rmtree(artifacts, ignore_errors=True)
    cmd = [shutil.which("node") or "node", str(E2E / "run.mjs"), "--vsix", str(vsix),
           "--server", str(lsp_command()), "--server-arg=--backend", "--server-arg=fake",
           "--expect", "fake_completion()", "--work", str(tmp_path / "work"), "--artifacts", str(artifacts),
           "--chromium", str(CHROMIUM)]
    try:
        proc = subprocess.run(cmd, cwd=E2E, capture_output=True, text=True, timeout=420)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the code-server run did not finish: {str(exc.stdout)[-2000:]}")
    result = json.loads((artifacts / "result.json").read_text())
    failed = [c for c in result["checks"] if not c["ok"]]
    assert proc.returncode == 0 and not failed, f"{failed}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    assert result["ghostText"] == "fake_completion()"
    assert result["acceptedLine"] == "result = fake_completion()"
    assert (artifacts / "vscode-ghost-text.png").stat().st_size > 10_000
