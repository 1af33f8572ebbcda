"""The one error hierarchy: every package raises errors derived from these, so a caller catches by
class and never by a class name written as a string.

It lives at the bottom (model/), because every package may import model and model imports none
of them: lsp, training and quantization raise user errors without reaching up to cli/.

- `CodeassistError`: an error codeassist raises on purpose (not a bug).
- `UserFacingError`: its str() is one sentence written for the user, saying what is wrong and, where
  it can, what to do. The command prints it without a traceback (exit status 1); the language
  server shows it in its status. A model file that cannot be read, a refused resume, a bad setting.
- `UserError`: bad input on the command line (a flag, a file, a position): exit status 2, as
  argparse exits for a malformed command line.
"""

from __future__ import annotations

__all__ = ["CodeassistError", "UserError", "UserFacingError"]


class CodeassistError(Exception):
    """An error codeassist raises on purpose; anything else reaching the top is a bug."""

    exit_code = 1


class UserFacingError(CodeassistError):
    """The message is one sentence for the user; printed as is, without a traceback."""


class UserError(UserFacingError):
    """Bad input from the user (a file, a flag, a position); exit status 2."""

    exit_code = 2
