"""Static navigation: editors and type checkers resolve `codeassist.*` imports without running Python.

The editable install is an import hook that static analysers cannot follow, so the repository
carries `codeassist/`, a folder of relative links to the package folders (issue 17). jedi (what
jedi-language-server and several Neovim set-ups use) must go from a cross-package import to the
definition in the real file, as pyright and mypy do through the same links.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import jedi

ROOT = Path(__file__).resolve().parents[1]


def _package_dirs() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(data["tool"]["setuptools"]["package-dir"])


def test_every_mapped_package_has_a_link_to_its_folder() -> None:
    mapping = _package_dirs()
    assert mapping, "pyproject maps no package folders"
    for name, folder in mapping.items():
        sub = name.removeprefix("codeassist.")
        link = ROOT / "codeassist" / sub
        assert link.is_symlink(), f"codeassist/{sub} is missing: add `ln -s ../{folder} codeassist/{sub}`"
        assert link.resolve() == (ROOT / folder).resolve()
        assert not Path(link.readlink()).is_absolute()  # works in any clone


def test_jedi_goes_from_a_cross_package_import_to_the_definition() -> None:
    source = "from codeassist.model.engine import Engine\nfrom codeassist.lsp.pipeline import Pipeline\n"
    script = jedi.Script(source, path=str(ROOT / "tests" / "nav_probe.py"), project=jedi.Project(str(ROOT)),
                         environment=jedi.create_environment(sys.prefix, safe=False))
    for line, column, name, folder in ((1, 37, "Engine", "model"), (2, 36, "Pipeline", "lsp")):
        found = script.goto(line, column, follow_imports=True)
        assert found, f"jedi did not resolve {name}"
        target = Path(str(found[0].module_path)).resolve()
        assert target.parent == (ROOT / folder).resolve()
        text = target.read_text().splitlines()[found[0].line - 1]
        assert re.match(rf"class {name}\b", text), text
