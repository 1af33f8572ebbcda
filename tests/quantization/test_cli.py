"""`codeassist quantize` as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codeassist.cli.main import main
from codeassist.model.checkpoint import read_info
from codeassist.model.store import named_model_path


def test_int8_to_a_path_then_complete_with_it_in_a_fresh_process(tiny_model_file: Path, tmp_path: Path,
                                                                  isolated_home: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny-int8.safetensors"
    assert main(["quantize", str(tiny_model_file), "--method", "int8", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    info = read_info(out)
    assert info.scheme == "int8" and info.provenance["quantized_from"] == str(tiny_model_file)
    src = tmp_path / "a.py"
    src.write_text("def add(a, b):\n    return a + b\n")
    # a fresh process has not imported the quantized runtime: load_model must find it by the metadata
    res = subprocess.run([sys.executable, "-m", "codeassist.cli", "complete", str(src), "--model", str(out),
                          "--max-tokens", "4", "--json"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "CODEASSIST_HOME": str(isolated_home)})
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["tokens"] <= 4


def test_gptq_with_user_calibration_saves_under_a_name(tiny_model_file: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = tmp_path / "repo"
    (code / "pkg").mkdir(parents=True)
    (code / "pkg" / "mod.py").write_text("def f(x):\n    return x * 2\n" * 40)
    (code / "notes.bin").write_bytes(b"\0\1\2")
    rc = main(["quantize", str(tiny_model_file), "--method", "gptq", "--group-size", "32",
               "--calibration", str(code), "--calib-samples", "4", "--calib-seq-len", "64", "--out", "mine"])
    assert rc == 0
    info = read_info(named_model_path("mine"))
    assert info.quantization["method"] == "gptq" and info.quantization["group_size"] == 32
    assert info.quantization["calibration"]["samples"] == 4
    assert capsys.readouterr().out.strip() == str(named_model_path("mine"))


@pytest.mark.parametrize(("argv", "message"), [
    (["--method", "int8", "--calibration", "x"], "--method gptq only"),
    ([], "--method"),
    (["--method", "gptq", "--calibration", "/no/such/dir"], "not found"),
    (["--method", "int8", "--out", "bad name!"], "invalid model name"),
])
def test_bad_arguments_are_one_line_errors(tiny_model_file: Path, capsys: pytest.CaptureFixture[str],
                                           argv: list[str], message: str) -> None:
    assert main(["quantize", str(tiny_model_file), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_model_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", str(tmp_path / "none.safetensors"), "--method", "int8"]) == 1
    err = capsys.readouterr().err
    assert "not found" in err and err.count("\n") == 1
