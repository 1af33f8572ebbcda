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


def test_threads_follow_the_free_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from codeassist.model import threads

    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert threads.pick_threads() == 2
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.4, 0.0, 0.0))
    assert threads.pick_threads() == 1  # one core busy: one thread
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (9.0, 0.0, 0.0))
    assert threads.pick_threads() == 1  # never zero
    assert threads.pick_threads(3) == 3  # an explicit request wins
