"""One error hierarchy: every error written for the user derives from model/errors.py's classes,
and the command turns them into one line by class, whatever their name."""

from __future__ import annotations

import argparse
import types

import pytest

from codeassist.cli.main import run_guarded
from codeassist.model.errors import CodeassistError, UserError, UserFacingError


def _failing(exc: BaseException) -> types.SimpleNamespace:
    def run(args: argparse.Namespace) -> int:
        raise exc

    return types.SimpleNamespace(run=run)


def test_the_user_facing_errors_of_every_package_share_the_base() -> None:
    from codeassist.lsp.client import LspError
    from codeassist.model.checkpoint import ModelFileError
    from codeassist.model.export import ExportError
    from codeassist.model.export_llama import TokenizerExportError
    from codeassist.model.tokenization import TokenizerFileError
    from codeassist.model.tokenizer import TokenizerError
    from codeassist.remote.cli import ServeError
    from codeassist.remote.errors import APIError
    from codeassist.remote.settings import SettingsError
    from codeassist.training.finetune import TrainError
    from codeassist.training.loop import NonFiniteLossError
    from codeassist.training.state import ResumeError

    for cls in (ModelFileError, ExportError, TokenizerExportError, TokenizerFileError, ServeError,
                SettingsError, TrainError, ResumeError, UserError, NonFiniteLossError, TokenizerError):
        assert issubclass(cls, UserFacingError), cls
    assert issubclass(LspError, CodeassistError) and issubclass(APIError, CodeassistError)
    assert issubclass(SettingsError, ValueError) and issubclass(TokenizerFileError, ValueError)


@pytest.mark.parametrize(("exc", "code"), [(UserError("--col needs --line"), 2),
                                           (UserFacingError("model file not found: x"), 1)])
def test_a_user_facing_error_is_one_line_with_its_exit_status(
        exc: Exception, code: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_guarded(_failing(exc), argparse.Namespace()) == code
    assert capsys.readouterr().err == f"codeassist: error: {exc}\n"


def test_a_renamed_subclass_is_still_user_facing(capsys: pytest.CaptureFixture[str]) -> None:
    """By class, not by name: a subclass nobody listed anywhere is printed as the user's error."""
    class SomethingNew(UserFacingError):
        pass

    assert run_guarded(_failing(SomethingNew("the thing is wrong")), argparse.Namespace()) == 1
    assert capsys.readouterr().err == "codeassist: error: the thing is wrong\n"


def test_a_class_named_like_a_user_error_is_still_a_bug(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CODEASSIST_DEBUG", raising=False)
    ModelFileError = type("ModelFileError", (RuntimeError,), {})  # the name is the point
    assert run_guarded(_failing(ModelFileError("boom")), argparse.Namespace()) == 1
    assert "internal error: ModelFileError: boom" in capsys.readouterr().err


def test_the_tokenizer_and_training_errors_stay_user_facing(capsys: pytest.CaptureFixture[str]) -> None:
    """model/tokenizer.py's TokenizerError and training/loop.py's NonFiniteLossError, which now derive
    from UserFacingError: the command prints them as before."""
    from codeassist.model.tokenizer import TokenizerError
    from codeassist.training.loop import NonFiniteLossError

    for exc in (TokenizerError("the tokenizer data is damaged"), NonFiniteLossError("training stopped")):
        assert run_guarded(_failing(exc), argparse.Namespace()) == 1
        assert capsys.readouterr().err == f"codeassist: error: {exc}\n"


def test_interrupt_is_130(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_guarded(_failing(KeyboardInterrupt()), argparse.Namespace()) == 130
    assert capsys.readouterr().err == "codeassist: interrupted\n"
