"""benchmarks/bench_finetune.py without training: its projects are unseen, its table and summary
are computed from the runs' report.json, and a project unpacks into a git repository."""

from __future__ import annotations

import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from codeassist.training.corpus import PACKAGES


@pytest.fixture
def bench(load_bench: Callable[[str], ModuleType]) -> ModuleType:
    return load_bench("bench_finetune")


def test_projects_are_pinned_and_in_no_training_data(bench: ModuleType) -> None:
    corpus = {p.key for p in PACKAGES}
    assert len(bench.DEFAULT_PROJECTS) >= 5
    assert all(p.version and p.key not in corpus and p.key not in bench.EXCLUDED for p in bench.PROJECTS)
    bench._check_unseen()
    bench.PROJECTS += (bench.Pin("flask", "3.1.3"),)
    with pytest.raises(SystemExit, match="flask"):
        bench._check_unseen()


def _report(old_em: float, new_em: float, gained: int, lost: int, p: float) -> dict[str, Any]:
    return {"wall_s": 100.0, "train": {"steps": 10, "passes": 1.5, "elapsed_s": 60.0, "stopped_early": False,
                                       "best_step": None},
            "gate": {"old": {"loss": 4.0, "exact_match": old_em, "lines": 100},
                     "new": {"loss": 3.0, "exact_match": new_em, "lines": 100}, "better": True,
                     "verdict": {"gained": gained, "lost": lost, "p_value": p, "beyond_noise": p < 0.05}}}


def test_rows_table_and_summary_compare_variants_on_the_same_projects(bench: ModuleType, tmp_path: Path) -> None:
    a, b = bench.Pin("a", "1"), bench.Pin("b", "2")
    runs = [bench.Run(a, tmp_path, "default", ()), bench.Run(b, tmp_path, "default", ()),
            bench.Run(a, tmp_path, "replay", ("--replay", "0.25")), bench.Run(b, tmp_path, "replay", ("--replay", "0.25"))]
    reports = [_report(0.05, 0.15, 12, 2, 0.01), _report(0.10, 0.08, 1, 3, 0.6),
               _report(0.05, 0.20, 16, 1, 0.001), {"error": "codeassist train exited 1", "log_tail": "boom",
                                                   "wall_s": 1.0}]
    rows = [bench.row(r, 0.1, rep) for r, rep in zip(runs, reports, strict=True)]
    assert rows[0]["gain_points"] == pytest.approx(10.0) and rows[1]["gain_points"] == pytest.approx(-2.0)
    s = bench.summary(rows)
    assert s["default"]["mean_gain"] == pytest.approx(4.0) and s["default"]["worst_gain"] == pytest.approx(-2.0)
    assert s["default"]["losers"] == ["b==2"] and s["default"]["beyond_noise"] == 1
    assert s["replay"]["projects"] == 1 and s["replay"]["failed"] == 1
    assert s["replay"]["vs_default"] == pytest.approx(5.0)  # a: +15 against +10
    text = bench.table(rows)
    assert "| a==1 | 0.10 | default | 10 (1.5) | 4.00 → 3.00 | 5.0% → 15.0% (100 lines) | +10.0 | +12/−2 | 0.010 |" in text
    assert "failed: codeassist train exited 1" in text


def test_a_project_unpacks_into_a_git_repository_once(bench: ModuleType, tmp_path: Path) -> None:
    src = tmp_path / "demo-1.0"
    (src / "demo").mkdir(parents=True)
    (src / "demo" / "__init__.py").write_text("def f():\n    return 1\n")
    archive = tmp_path / "archives" / "demo-1.0.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as t:
        t.add(src, arcname="demo-1.0")
    pin = bench.Pin("demo", "1.0")
    assert bench.fetch(archive.parent, pin) == archive  # already there: nothing is downloaded
    folder = bench.unpack(archive, tmp_path / "projects", pin)
    assert (folder / "demo" / "__init__.py").read_text().startswith("def f")
    log = subprocess.run(["git", "-C", str(folder), "log", "--oneline"], capture_output=True, text=True, check=True)
    assert "demo 1.0" in log.stdout
    assert bench.unpack(archive, tmp_path / "projects", pin) == folder


def test_a_rerun_compares_with_the_default_model_again(bench: ModuleType, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    names = ["bench-a-default.safetensors", "bench-a-default.previous.safetensors", "bench-a-default.loss.png",
             "bench-a-default-x.safetensors", "bench-ab-default.safetensors"]
    for n in names:
        (models / n).write_text("x")
    bench.forget_model(tmp_path, "bench-a-default")
    assert sorted(p.name for p in models.iterdir()) == ["bench-a-default-x.safetensors", "bench-ab-default.safetensors"]
