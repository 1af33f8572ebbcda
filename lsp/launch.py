"""How an editor starts this language server, and the language id it sends for a file.

The demo and the evaluation harness start the server exactly so (`codeassist lsp --stdio` in
this interpreter) and open documents with these language ids.
"""

from __future__ import annotations

import sys

__all__ = ["LANGUAGES", "language_of", "server_command"]

LANGUAGES = {".py": "python", ".js": "javascript", ".ts": "typescript", ".go": "go", ".rs": "rust",
             ".c": "c", ".h": "c", ".cpp": "cpp", ".java": "java", ".rb": "ruby", ".sh": "shellscript",
             ".lua": "lua", ".md": "markdown", ".txt": "plaintext"}


def language_of(suffix: str) -> str:
    """The language id an editor sends for a file with this suffix ("plaintext" when unknown)."""
    return LANGUAGES.get(suffix, "plaintext")


def server_command(model: str | None = None, device: str | None = None, backend: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "codeassist.cli.main", "lsp", "--stdio"]
    for flag, value in (("--model", model), ("--device", device), ("--backend", backend)):
        if value:
            cmd += [flag, value]
    return cmd
