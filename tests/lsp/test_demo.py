"""`make demo`: the example project through the real server and the embedded default model."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_the_demo_suggests_the_projects_own_idiom(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "codeassist.lsp.demo", "--example", str(tmp_path / "demo")],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    assert "2 files" in out  # the example project was indexed as the editor's workspace
    assert "suggestion: 'lines = f.read().splitlines()' (it follows the workspace's own code)" in out


def test_the_demo_refuses_a_missing_file_in_one_sentence(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "codeassist.lsp.demo", str(tmp_path / "nope.py")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "is not a file" in run.stderr
