"""Moved: `codeassist eval` is codeassist.evaluation.cli.

Kept only until cli/main.py's command table names "codeassist.evaluation.cli" for "eval" (its
owner's change); delete it then.
"""

from __future__ import annotations

from codeassist.evaluation.cli import add_arguments, run

__all__ = ["add_arguments", "run"]
