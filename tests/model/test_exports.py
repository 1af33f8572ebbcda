"""Each package's __all__: every name imports, the names are exactly the entry points its
__init__.py declares for type checkers, and importing a package loads none of them."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from codeassist.model.exports import exported_modules

PACKAGES = ["cli", "model", "lsp", "training", "quantization", "remote"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_name_in_all_imports(name: str) -> None:
    package = importlib.import_module(f"codeassist.{name}")
    assert package.__all__, f"codeassist.{name} exports nothing"
    assert set(package.__all__) == set(exported_modules(package.__file__))
    for entry in package.__all__:
        value = getattr(package, entry)
        assert getattr(value, "__name__", entry) == entry, (name, entry)
        module = exported_modules(package.__file__)[entry]
        assert getattr(importlib.import_module(module), entry) is value


@pytest.mark.parametrize("name", PACKAGES)
def test_no_entry_point_is_named_like_a_module(name: str) -> None:
    """A package attribute named like a submodule becomes that module once it is imported."""
    package = importlib.import_module(f"codeassist.{name}")
    folder = Path(package.__file__).parent
    assert not {entry for entry in package.__all__ if (folder / f"{entry}.py").exists()}


def test_an_unknown_name_is_an_attribute_error_and_submodules_still_import() -> None:
    import codeassist.model as model

    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        model.nothing_here  # noqa: B018 - the access is the test
    from codeassist.model import fim_templates  # a submodule, not an entry point

    assert fim_templates.__name__ == "codeassist.model.fim_templates"


def test_importing_the_packages_loads_no_entry_point() -> None:
    code = ("import sys; import " + ", ".join(f"codeassist.{p}" for p in PACKAGES) + "; "
            "import codeassist.model.errors, codeassist.lsp.settings; "
            "print(sorted(m for m in ('torch', 'fastapi', 'codeassist.model.engine', 'codeassist.lsp.server') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
