"""The user errors, re-exported from model/errors.py where they now live (the bottom of the layers).

Kept only for importers that have not switched yet (cli/complete.py, lsp/eval_cli.py); new code
imports `codeassist.model.errors`.
"""

from __future__ import annotations

from codeassist.model.errors import CodeassistError, UserError, UserFacingError

__all__ = ["CodeassistError", "UserError", "UserFacingError"]
