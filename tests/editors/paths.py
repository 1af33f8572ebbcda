"""Paths and tools shared by the editor tests (VS Code extension, code-server, Neovim)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = ROOT / "vscode-extension"
ARTIFACTS = ROOT / "test-artifacts"  # gitignored; CI keeps it as the run's artifacts


def lsp_command() -> Path:
    """The installed `codeassist-lsp` next to this Python (the venv's console script)."""
    return Path(sys.executable).parent / "codeassist-lsp"


def npm(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("npm")
    if exe is None:
        pytest.fail("npm is not installed (Debian: apt-get install npm; `make editor-deps` does it)")
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false"}
    return subprocess.run([exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
