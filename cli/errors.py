"""Errors meant for the user: the message is one sentence, printed without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a file, a flag, a position); exit status 2."""

    exit_code = 2
