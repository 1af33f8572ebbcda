"""benchmarks/bench_lsp.py: its cold cases are newly opened files of about 800 tokens, and every
run reports its figures (driven here against the fake backend, so no model is needed)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from codeassist.model.tokenizer import encode

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_lsp  # noqa: E402


def test_a_cold_case_is_the_first_800_tokens_in_whole_lines_with_one_line_cut() -> None:
    text = "".join(f"def function_{i}(argument):\n    return argument + {i}\n" for i in range(400))
    cut, line, col = bench_lsp.cut_case(text)
    lines = cut.split("\n")
    assert 700 <= len(encode(cut)) <= 800
    full = text.split("\n")
    assert cut.endswith("\n") and lines[:line] == full[:line] and lines[line + 1:-1] == full[line + 1:len(lines) - 1]
    assert full[line].startswith(lines[line]) and len(lines[line]) == col < len(full[line].rstrip())
    assert len(lines) * 2 // 3 <= line < len(lines)


@pytest.mark.slow
def test_the_benchmark_reports_every_run(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_lsp.py"), "--backend", "fake", "--chars", "12",
         "--cold", "2", "--files", "3", "--only", "typing,busy,cold,memory", "--json"],
        capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(out.stdout)
    assert report["typing"]["answered"] == report["peer"]["answered"] == report["busy"]["answered"] > 0
    assert report["cold"]["requests"] == 2 and report["cold"]["cut_short"] == 0
    assert set(report["memory_mb"]) == {"ready", "after 3"} and report["memory_mb"]["after 3"] > 10
    assert "against the peer" in out.stderr and "one core busy against idle" in out.stderr


def test_an_unknown_run_is_refused_in_one_sentence() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_lsp.py"), "--only", "typing,speed"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "unknown run speed" in out.stderr and "Traceback" not in out.stderr
