from pathlib import Path

import pytest

from codeassist.cli.main import main


def test_doctor_reports_a_working_model(tiny_model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--model", str(tiny_model_file), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "model: tiny" in out and "2 layers" in out and "all checks passed" in out


def test_doctor_names_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--model", str(tmp_path / "gone.safetensors")]) == 1
    out = capsys.readouterr().out
    assert "problem: model file not found" in out


def test_unknown_subcommand_arguments_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["complete", "--no-such-flag"])
    assert exc.value.code == 2
