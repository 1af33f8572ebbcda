"""`codeassist complete` end to end, as a user runs it: output, JSON, and one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codeassist.cli.complete import cursor_offset
from codeassist.model.completion import complete
from codeassist.model.engine import Engine
from codeassist.model.errors import UserError


def run_cli(*args: str, stdin: bytes | None = None, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CODEASSIST_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "codeassist.cli", *args], input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, timeout=120, env=env)


def reference(model: Path, prefix: str, suffix: str, max_tokens: int) -> tuple[str, int]:
    """The same model run here: (the completion, tokens generated); the CLI must print exactly it."""
    text, result = complete(Engine.load(str(model), device="cpu"), prefix, suffix, max_new_tokens=max_tokens)
    assert text.strip()  # something to compare with
    return text, len(result.tokens)


def test_completes_a_file_with_json_output(tmp_path: Path, tiny_model_file: Path, isolated_home: Path) -> None:
    src = tmp_path / "a.py"
    src.write_text("def add(a, b):\n    return a + b\n")
    res = run_cli("complete", str(src), "--line", "2", "--col", "5", "--model", str(tiny_model_file),
                  "--max-tokens", "5", "--threads", "1", "--json", home=isolated_home)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert set(out) >= {"completion", "model", "tokens", "latency_ms"}
    text, tokens = reference(tiny_model_file, "def add(a, b):\n    ", "return a + b\n", 5)
    assert out["model"] == "tiny" and out["completion"] == text and out["tokens"] == tokens


def test_reads_standard_input(tiny_model_file: Path, isolated_home: Path) -> None:
    res = run_cli("complete", "-", "--model", str(tiny_model_file), "--max-tokens", "3", "--threads", "1",
                  stdin=b"import os\nx = ", home=isolated_home)
    assert res.returncode == 0, res.stderr
    text, _ = reference(tiny_model_file, "import os\nx = ", "", 3)  # the cursor: the end of the input
    assert res.stdout == text + ("" if text.endswith("\n") else "\n")


@pytest.mark.parametrize("case,content,extra,needle", [
    ("empty", b"", [], "empty"),
    ("binary", b"\x7fELF\x00\x00\x01binary", [], "binary"),
    ("non-utf8", b"x = '\xff\xfe'\n", [], "not UTF-8"),
    ("line out of range", b"x = 1\n", ["--line", "99"], "out of range"),
    ("column out of range", b"x = 1\n", ["--line", "1", "--col", "40"], "out of range"),
    ("missing model", b"x = 1\n", ["--model", "/nonexistent/m.safetensors"], "not found"),
    ("corrupt model", b"x = 1\n", ["--model", "CORRUPT"], "truncated"),
    ("missing file", None, [], "no such file"),
])
def test_bad_input_is_one_clear_line(tmp_path: Path, tiny_model_file: Path, isolated_home: Path, case: str,
                                     content: bytes | None, extra: list[str], needle: str) -> None:
    src = tmp_path / "input.py"
    if content is not None:
        src.write_bytes(content)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(tiny_model_file.read_bytes()[:5000])
    args = [a if a != "CORRUPT" else str(corrupt) for a in extra]
    if "--model" not in args:
        args += ["--model", str(tiny_model_file)]
    res = run_cli("complete", str(src), *args, home=isolated_home)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr


def test_cursor_offsets() -> None:
    text = "ab\ncd\n"
    assert cursor_offset(text, None, None) == len(text)
    assert cursor_offset(text, 2, 1) == 3
    assert cursor_offset(text, 2, 3) == 5
    assert cursor_offset(text, 3, 1) == 6  # the empty last line
    with pytest.raises(UserError):
        cursor_offset(text, 0, 1)
