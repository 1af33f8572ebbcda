"""model/sources.py is the one rule set for which files are source code, and its users below training
(the language server's workspace index, the repository eval) reach it without importing training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from codeassist.model import sources
from codeassist.training import collect, redaction


def test_the_workspace_index_and_the_repository_eval_load_no_training_module(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("def f(x):\n    return x + 1\n")
    (tmp_path / ".env").write_text("SECRET=1\n")
    code = ("import json, sys; from pathlib import Path; "
            "import codeassist.evaluation.repo as repo, codeassist.lsp.workspace as ws; "
            f"root = Path({str(tmp_path)!r}); "
            "files = [p.name for p in ws.workspace_files(root)]; "
            "print(json.dumps({'files': files, 'read': [ws.read_source(root / f) is not None for f in files], "
            "'eval': sorted(repo.source_texts(root)), "
            "'codeassist': sorted(m for m in sys.modules if m.startswith('codeassist.'))}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout)
    assert (found["files"], found["read"], found["eval"]) == (["app.py"], [True], ["app.py"])  # the rules ran
    assert [m for m in found["codeassist"] if m.startswith("codeassist.training")] == []


def test_the_rules_import_nothing_from_codeassist_but_the_errors() -> None:
    code = ("import json, sys, codeassist.model.sources; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('codeassist.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout))
    # codeassist.model's __init__ loads its lazy-export table, nothing more
    assert loaded <= {"codeassist.model", "codeassist.model.exports", "codeassist.model.errors",
                      "codeassist.model.sources"}


def test_the_collector_uses_the_same_rules_not_a_copy() -> None:
    assert collect.Candidate is sources.Candidate
    assert collect.content_rule is sources.content_rule
    assert collect.list_candidates is sources.list_candidates
    assert collect.language_of is sources.language_of
    assert redaction.is_secret_filename is sources.is_secret_filename
