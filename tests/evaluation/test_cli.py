import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from codeassist.evaluation.lines import sample_positions
from codeassist.evaluation.report import edit_similarity

SOURCE = '''import os


def read_lines(path):
    """Return the lines of a text file."""
    with open(path) as f:
        return f.read().splitlines()


def main():
    for line in read_lines("x.txt"):
        print(line.upper())
'''


def test_edit_similarity() -> None:
    assert edit_similarity("abc", "abc") == 1.0
    assert edit_similarity("", "") == 1.0
    assert edit_similarity("abc", "") == 0.0
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)


def test_sampled_cursors_sit_inside_code() -> None:
    lines = SOURCE.split("\n")
    for line, col in sample_positions(SOURCE, 6, random.Random(1)):
        text = lines[line].rstrip()
        assert len(text) - len(text.lstrip()) <= col < len(text)


def codeassist(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "codeassist.cli.main", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_eval_drives_the_server_and_reports(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(SOURCE)
    done = codeassist("eval", str(tmp_path), "--samples", "5", "--json", "--backend", "fake")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["samples"] == 5
    assert report["empty_rate"] == 0.0  # the fake always answers
    assert 0.0 <= report["edit_similarity"] <= 1.0 and report["exact_match"] == 0.0
    assert report["p95_ms"] >= report["p50_ms"] > 0
    assert report["status"]["backend"] == "fake"


@pytest.mark.slow
def test_eval_typing_mode(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(SOURCE)
    done = codeassist("eval", str(tmp_path / "a.py"), "--typing", "--chars", "20", "--json", "--backend", "fake")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["keystrokes"] >= 20 and report["answered"] == report["keystrokes"]
    assert report["p95_ms"] >= report["p50_ms"] > 0


def test_eval_without_files_is_one_line_error(tmp_path: Path) -> None:
    done = codeassist("eval", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "no source files" in done.stderr


def test_the_harness_does_not_load_torch() -> None:
    code = ("import sys, codeassist.evaluation.cli, codeassist.evaluation.harness, codeassist.evaluation.repo; "
            "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
