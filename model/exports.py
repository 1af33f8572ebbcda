"""A package's entry points, loaded on first use (PEP 562 `__getattr__`).

`import codeassist.lsp` must not import torch (a remote-only language server starts without it),
and `import codeassist.model.errors` must not import the engine, so no package's __init__.py
imports its modules eagerly. Each names its entry points once, as imports under
`if TYPE_CHECKING:` (what editors and type checkers read: go-to-definition works on them), and
lists them in `__all__`; `lazy_exports` reads that block and imports a name's module the first
time the name is asked for.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["exported_modules", "lazy_exports"]


def exported_modules(init_file: str) -> dict[str, str]:
    """{name: module} from the `if TYPE_CHECKING:` imports of a package's __init__.py."""
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.module:
                    found |= {alias.asname or alias.name: stmt.module for alias in stmt.names}
    return found


def lazy_exports(package: str, init_file: str) -> Callable[[str], Any]:
    """The package's module `__getattr__`: an entry point is imported from its module on first use."""
    modules: dict[str, str] = {}

    def __getattr__(name: str) -> Any:
        if not modules:
            modules.update(exported_modules(init_file))
        if name not in modules:  # also how `from package import submodule` finds a submodule
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(modules[name]), name)

    return __getattr__
