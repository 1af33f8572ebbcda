from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from codeassist.cli.main import main
from codeassist.model.checkpoint import read_info
from codeassist.model.store import named_model_path
from codeassist.training.cli import parse_duration
from codeassist.training.finetune import install_model, run_dir, run_finetune
from codeassist.training.finetune_setup import FinetuneOptions

from .fixtures import SECRET_CODE, code_file, init_repo, write

FAST = ["--batch-size", "2", "--micro-batch", "1", "--seq-len", "32", "--no-progress", "--precision", "fp32",
        "--eval-interval", "2", "--ckpt-interval", "2", "--workers", "1", "--device", "cpu"]


def _repo(tmp_path: Path, n: int = 6) -> Path:
    repo = init_repo(tmp_path / "proj")
    write(repo / ".env", "TOKEN=abc\n")
    write(repo / "settings.py", SECRET_CODE)
    for i in range(n):
        write(repo / "src" / f"m{i}.py", code_file(i))
    return repo


def _losses(name: str) -> list[float]:
    with safe_open(str(run_dir(name) / "state.safetensors"), framework="pt") as f:
        return list(json.loads((f.metadata() or {})["state"])["losses"])


def test_parse_duration() -> None:
    assert parse_duration("30m") == 1800 and parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    assert parse_duration("45") == 45
    for bad in ("", "soon", "0m", "m"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)


def test_train_collects_trains_gates_installs_and_rolls_back(tmp_path: Path, tiny_model_file: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    repo = _repo(tmp_path)
    install_model(tiny_model_file, "t1")  # the user's current model: what the gate compares with
    rc = main(["train", str(repo), "--init-from", str(tiny_model_file), "--max-iters", "4", "--yes",
               "--out", "t1", "--lr", "1e-2", "--gate-lines", "2", *FAST])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "kept 7 files" in out and "secret file" in out and "replaced with placeholders" in out
    assert "the new model is better: held-out loss" in out and "installed as 't1'" in out
    model, previous = named_model_path("t1"), named_model_path("t1.previous")
    assert read_info(model).provenance["steps"] == 4 and read_info(previous).provenance["steps"] == 0
    assert model.with_suffix(".loss.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    metrics = [json.loads(line) for line in model.with_suffix(".loss.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4] and all(math.isfinite(m["loss"]) for m in metrics)
    assert main(["train", "--rollback", "--out", "t1"]) == 0
    assert read_info(named_model_path("t1")).provenance["steps"] == 0


def test_a_small_project_ends_after_max_epochs_before_the_time_budget(tmp_path: Path, tiny_model_file: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from codeassist.training.dataset import read_dataset
    from codeassist.training.finetune_setup import epoch_iters

    repo = _repo(tmp_path, n=3)
    rc = main(["train", str(repo), "--init-from", str(tiny_model_file), "--time-budget", "1h", "--max-epochs",
               "0.5", "--yes", "--out", "t4", "--gate-lines", "0", *FAST])
    out = capsys.readouterr().out
    assert rc == 0, out
    steps = epoch_iters(0.5, read_dataset(run_dir("t4") / "data").train_tokens, 2 * 32)
    assert 1 < steps < 200
    assert f"the run ends after 60 minutes or {steps:,} steps (0.5 passes over the data)" in out
    assert len(_losses("t4")) == steps and f"trained {steps} steps" in out
    with pytest.raises(SystemExit) as exit_info:  # argparse's usage error
        main(["train", str(repo), "--max-epochs", "0", "--out", "t4", *FAST])
    assert exit_info.value.code == 2 and "--max-epochs: 0 must be a positive number" in capsys.readouterr().err


def test_confirmation_and_resume_errors(tmp_path: Path, tiny_model_file: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    repo = _repo(tmp_path, n=3)
    opts = FinetuneOptions(paths=(str(repo),), out="t2", init_from=str(tiny_model_file), max_iters=2,
                           batch_size=2, micro_batch=1, seq_len=32, workers=1, progress=False, gate_lines=0)
    assert run_finetune(opts, confirm=lambda question: False) == 1
    assert "cancelled" in capsys.readouterr().out and not (run_dir("t2") / "data").exists()
    rc = main(["train", str(repo), "--init-from", str(tiny_model_file), "--max-iters", "2", "--out", "t2", *FAST])
    assert rc == 1 and "pass --yes" in capsys.readouterr().err  # no terminal to ask on
    rc = main(["train", str(repo), "--resume", "--out", "t2", "--yes", *FAST])
    assert rc == 1 and "no interrupted run named 't2'" in capsys.readouterr().err
    rc = main(["train", str(repo), "--out", "bad/name", "--yes", *FAST])
    assert rc == 2 and "invalid model name" in capsys.readouterr().err


def test_resume_against_changed_repositories_is_refused(tmp_path: Path, tiny_model_file: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    repo = _repo(tmp_path, n=3)
    args = ["train", str(repo), "--init-from", str(tiny_model_file), "--yes", "--out", "t3", "--gate-lines", "0",
            *FAST]
    assert main([*args, "--max-iters", "1"]) == 0
    assert main([*args, "--max-iters", "2", "--resume"]) == 0  # same data: continues
    assert len(_losses("t3")) == 2
    write(repo / "src" / "new_module.py", code_file(40))
    capsys.readouterr()
    assert main([*args, "--max-iters", "3", "--resume"]) == 1
    assert "cannot resume: the training data changed" in capsys.readouterr().err


def test_init_from_a_quantized_model_dequantizes_it(tmp_path: Path) -> None:
    from codeassist.model.config import get_preset
    from codeassist.quantization.quantize import quantize
    from codeassist.training.finetune_setup import load_init_model
    from codeassist.training.loop import build_model

    base = build_model(get_preset("tiny"), seed=0)
    quantize(base, "int8").save(base, tmp_path / "q.safetensors")
    model, origin, _ = load_init_model(str(tmp_path / "q.safetensors"), "default", 0)
    assert origin == "q"
    params = dict(model.named_parameters())
    assert params and all(p.dtype == torch.float32 and p.requires_grad for p in params.values())
    w, ref = params["transformer.h.0.mlp.c_fc.weight"], base.transformer.h[0].mlp.c_fc.weight
    assert (w - ref).abs().max() < 0.05 * ref.abs().max()  # int8 round trip, now trainable floats


def test_default_batch_fits_the_processes_and_learning_rate_scales_with_width() -> None:
    from codeassist.model.config import get_preset
    from codeassist.training.finetune_setup import TrainError, _train_config, default_lr
    from codeassist.training.loop import build_model

    model = build_model(get_preset("tiny"), seed=0)
    opts = FinetuneOptions(paths=("x",))
    cpu = torch.device("cpu")
    for world, micro in ((1, 4), (2, 2), (4, 1)):
        cfg = _train_config(opts, model, 10**6, world, cpu)
        assert (cfg.batch_size, cfg.grad_accum) == (micro, 4 // micro)  # 4 sequences a step in all
        assert cfg.seq_len == min(1024, model.config.block_size)
    with pytest.raises(TrainError, match="multiple of --micro-batch 1 times the 8 processes"):
        _train_config(opts, model, 10**6, 8, cpu)
    width = model.config.n_embd
    assert default_lr(model, scratch=False) == pytest.approx(1e-3 * 256 / width)
    assert default_lr(model, scratch=True) == 1e-3
    assert _train_config(FinetuneOptions(paths=("x",), lr=5e-5), model, 10**6, 1, cpu).lr == 5e-5
    # the run's length: 4 passes over the training tokens unless --max-iters says otherwise
    seq = min(1024, model.config.block_size)
    assert cfg.max_iters == -(-4 * 10**6 // (4 * seq))
    assert _train_config(FinetuneOptions(paths=("x",), max_epochs=0.5), model, 10**6, 1, cpu).max_iters == \
        -(-10**6 // (2 * 4 * seq))
    assert _train_config(FinetuneOptions(paths=("x",), max_iters=7), model, 10**6, 1, cpu).max_iters == 7


def test_learning_rate_decays_by_the_budget_or_the_steps_whichever_is_further() -> None:
    from codeassist.training.loop import TrainConfig, lr_at

    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_iters=10)
    assert lr_at(4, cfg, 110, time_fraction=0.9) == pytest.approx(5e-4)  # warm-up first
    half = 1e-4 + 0.5 * 9e-4  # cosine at its middle
    assert lr_at(60, cfg, 110) == pytest.approx(half)  # by steps alone
    assert lr_at(60, cfg, 110, time_fraction=0.1) == pytest.approx(half)  # the steps are further along
    assert lr_at(20, cfg, 110, time_fraction=0.5) == pytest.approx(half)  # the clock is further along
    assert lr_at(20, cfg, 10**9, time_fraction=1.5) == pytest.approx(1e-4)  # a budget alone; past it, min_lr


def test_progress_bar_follows_the_limit_that_is_further_along(capsys: pytest.CaptureFixture[str]) -> None:
    from codeassist.training.finetune import ProgressBar
    from codeassist.training.loop import TrainConfig

    def at(bar: ProgressBar, step: int, elapsed_s: float) -> float:
        bar({"step": step, "max_iters": 10, "elapsed_s": elapsed_s, "loss": 1.0, "tok_s": 100.0,
             "val_loss": None})
        return float(bar.bar.n)

    timed = ProgressBar(TrainConfig(max_iters=10, time_budget_s=100.0), enabled=True)
    assert at(timed, 5, 10.0) == 500  # the steps lead
    assert at(timed, 6, 90.0) == 900  # the clock leads
    assert at(timed, 7, 150.0) == 1000  # past the budget: full, not over
    timed.close()
    by_steps = ProgressBar(TrainConfig(max_iters=10), enabled=True)
    assert at(by_steps, 3, 500.0) == 3
    by_steps.close()
    assert "loss 1.000" in capsys.readouterr().err
