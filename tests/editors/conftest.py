"""Fixtures for the editor tests: the extension's node_modules and the packaged .vsix."""

from __future__ import annotations

from pathlib import Path

import pytest

from .paths import EXTENSION, npm


@pytest.fixture(scope="session")
def extension_modules() -> Path:
    """vscode-extension/node_modules, installed from the lockfile by `make editor-deps`."""
    modules = EXTENSION / "node_modules"
    if not (modules / ".bin" / "tsc").exists():
        pytest.fail("vscode-extension/node_modules is missing: run `make editor-deps` (npm ci from the lockfile)")
    return modules


@pytest.fixture(scope="session")
def vsix(extension_modules: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Builds the .vsix once per session (esbuild bundle + @vscode/vsce, offline), into a temporary
    folder so that a concurrent run in the same checkout cannot swap it mid-install."""
    out = tmp_path_factory.mktemp("vsix") / "codeassist.vsix"
    proc = npm(["run", "package", "--", "--out", str(out)], EXTENSION, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert out.exists()
    return out
