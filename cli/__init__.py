"""The `codeassist` command line: one command, a subcommand per job.

Entry points load on first use (model/exports.py).
"""

from typing import TYPE_CHECKING

from codeassist.model.exports import lazy_exports

if TYPE_CHECKING:
    from codeassist.cli.main import build_parser, lsp_main, run_guarded, serve_main, train_main

# `main` itself is codeassist.cli.main.main: a package attribute cannot be both it and the module
__all__ = ["build_parser", "lsp_main", "run_guarded", "serve_main", "train_main"]

__getattr__ = lazy_exports(__name__, __file__)
