"""`codeassist train` with the levers on: the flags reach the run, and the closing report and
report.json state exact match before and after and the paired verdict."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from codeassist.cli.main import main
from codeassist.model.checkpoint import read_info
from codeassist.model.store import named_model_path
from codeassist.training import dataset
from codeassist.training.finetune import install_model, run_dir
from codeassist.training.shards import Document

from .fixtures import code_file
from .test_cli import FAST, _repo


@pytest.mark.slow  # collects, tokenizes, trains and gates: about 30 s on two busy cores
def test_train_with_every_lever_reports_what_the_user_gets(tmp_path: Path, tiny_model_file: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    sample: list[tuple[int, int]] = []

    def replay_documents(target_chars: int, seed: int) -> list[Document]:  # the standard library's stand-in
        sample.append((target_chars, seed))
        return [Document(path=f"std/r{i}.py", text=code_file(50 + i)) for i in range(4)]

    monkeypatch.setattr(dataset, "replay_documents", replay_documents)
    repo = _repo(tmp_path, n=8)
    install_model(tiny_model_file, "t5")
    rc = main(["train", str(repo), "--init-from", str(tiny_model_file), "--max-iters", "8", "--yes", "--out", "t5",
               "--lr", "1e-2", "--gate-lines", "3", "--replay", "0.5", "--early-stop", "2", "--dropout", "0.1",
               "--fim-rate", "0.9", "--warmup", "3", *FAST])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "50% of each step is general code" in out and "the lowest check loss" in out
    assert sample == [(dataset.REPLAY_MIN_CHARS, 0)]  # the tiny project asks for the smallest sample
    assert "What you get: line exact match on 3 held-out lines of your code: " in out
    report = json.loads((run_dir("t5") / "report.json").read_text())
    assert report["options"]["replay"] == 0.5 and report["options"]["fim_rate"] == 0.9
    assert report["data"]["replay_tokens"] > 0 and report["data"]["check_tokens"] > 0
    gate, verdict = report["gate"], report["gate"]["verdict"]
    assert gate["new"]["lines"] == gate["old"]["lines"] == verdict["lines"] == 3
    assert verdict["new_hits"] == round(3 * gate["new"]["exact_match"])
    assert verdict["old_hits"] == round(3 * gate["old"]["exact_match"])
    assert report["train"]["best_step"] is not None and 1 <= report["train"]["steps"] <= 8
    manifest = json.loads((run_dir("t5") / "data" / "manifest.json").read_text())
    assert manifest["fim_rate"] == 0.9 and {"check", "replay"} <= set(manifest["splits"])
    # the installed model carries no dropout into inference and records the weights it kept
    candidate = read_info(run_dir("t5") / "model.safetensors")
    assert candidate.provenance["best_step"] == report["train"]["best_step"]
    if gate["better"]:
        assert read_info(named_model_path("t5")).provenance["best_step"] == report["train"]["best_step"]


@pytest.mark.parametrize("flag, value, message", [
    ("--replay", "1", "--replay: 1 must be at least 0 and below 1"),
    ("--dropout", "-0.1", "--dropout: -0.1 must be at least 0 and below 1"),
    ("--fim-rate", "1.5", "--fim-rate: 1.5 must be between 0 and 1"),
    ("--fim-rate", "half", "--fim-rate: 'half' is not a number"),
    ("--early-stop", "0", "--early-stop: 0 must be positive"),
])
def test_bad_lever_values_are_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str,
                                           value: str, message: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(tmp_path), flag, value, *FAST])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_early_stop_on_a_project_too_small_for_a_check_split_says_so(tmp_path: Path, tiny_model_file: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    repo = _repo(tmp_path, n=1)  # two files: one held out for the gate, one to train on
    rc = main(["train", str(repo), "--init-from", str(tiny_model_file), "--max-iters", "2", "--yes", "--out", "t6",
               "--early-stop", "2", *FAST])
    assert rc == 2 and "too few files to hold out a check split" in capsys.readouterr().err


def test_replay_is_a_seeded_sample_of_the_standard_librarys_training_files() -> None:
    from codeassist.training.stdlib import split_documents, stdlib_documents

    first = dataset.replay_documents(200_000, seed=0)
    assert [d.path for d in first] == [d.path for d in dataset.replay_documents(200_000, seed=0)]
    assert [d.path for d in first] != [d.path for d in dataset.replay_documents(200_000, seed=1)]
    chars = sum(len(d.text) for d in first)
    assert chars >= 200_000 and chars - len(first[-1].text) < 200_000  # just enough
    _, held_out = split_documents(stdlib_documents())
    assert not {d.path for d in first} & {d.path for d in held_out}  # never gate_default's files


def _state(name: str) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(run_dir(name) / "state.safetensors"), framework="pt") as f:
        return dict(json.loads((f.metadata() or {})["state"]))


@pytest.mark.slow  # two torchrun processes and a single one, each with a standard-library replay sample
def test_torchrun_with_replay_and_early_stop_matches_one_process(tmp_path: Path, tiny_model_file: Path) -> None:
    """Also the plain DDP check (it was test_cli's own launch): rank 0 alone speaks, the same global
    batch gives one process's losses. A torchrun launch is three processes that import torch."""
    repo = _repo(tmp_path, n=8)
    common = ["train", str(repo), "--init-from", str(tiny_model_file), "--max-iters", "8", "--yes",
              "--gate-lines", "0", "--lr", "3e-2", "--replay", "0.5", "--early-stop", "1", *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "codeassist.cli.main", *common, "--out", "ddp"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "with 2 process(es)" in ddp.stdout and ddp.stdout.count("training tiny") == 1  # rank 0 speaks
    assert main([*common, "--out", "single"]) == 0
    two, one = _state("ddp"), _state("single")
    assert len(two["losses"]) == len(one["losses"]) == one["step"] > 0
    assert one["replay_seen"] > 0 and len(one["check_losses"]) >= 2
    assert (two["step"], two["replay_seen"], two["best_step"], two["stopped_early"]) == \
        (one["step"], one["replay_seen"], one["best_step"], one["stopped_early"])
    assert [s for s, _ in two["check_losses"]] == [s for s, _ in one["check_losses"]]
    assert [v for _, v in two["check_losses"]] == pytest.approx([v for _, v in one["check_losses"]], abs=1e-4)
    assert two["losses"] == pytest.approx(one["losses"], abs=1e-4)
