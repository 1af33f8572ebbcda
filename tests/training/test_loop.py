from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from codeassist.model.checkpoint import load_model
from codeassist.model.config import ModelConfig
from codeassist.training import loop
from codeassist.training.loop import NonFiniteLossError, TrainConfig, build_model, make_optimizer, train
from codeassist.training.state import ResumeError, load_train_state

# a model small enough that a step takes milliseconds
SMALL = ModelConfig(block_size=64, vocab_size=128, n_layer=1, n_head=2, n_embd=32)
CFG = TrainConfig(batch_size=2, seq_len=32, grad_accum=2, max_iters=8, lr=3e-3, min_lr=3e-4, warmup_iters=2,
                  eval_interval=4, eval_batches=2, ckpt_interval=4, seed=5, autocast_bf16=False)


def data(seed: int = 0, n: int = 4000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # a learnable sequence: mostly a repeating pattern, some noise
    base = np.tile(np.arange(40, dtype=np.uint16) * 3 % 128, n // 40 + 1)[:n]
    noise = rng.integers(0, 128, n, dtype=np.uint16)
    return np.where(rng.random(n) < 0.2, noise, base).astype(np.uint16)


class Crash(Exception):
    pass


def run(out: Path, cfg: TrainConfig = CFG, resume: bool = False, crash_at: int | None = None,
        data_id: str = "d1", train_data: np.ndarray | None = None, **kw: Any) -> tuple[loop.TrainState, torch.nn.Module]:
    model = build_model(SMALL, seed=1)

    def progress(p: dict[str, Any]) -> None:
        if crash_at is not None and p["step"] == crash_at:
            raise Crash

    state = train(model, data() if train_data is None else train_data, data(1, 1000), cfg, out,
                  torch.device("cpu"), resume=resume, on_progress=progress, data_id=data_id, **kw)
    return state, model


def test_resume_reproduces_the_uninterrupted_losses_bitwise(tmp_path: Path) -> None:
    full, full_model = run(tmp_path / "a")
    assert len(full.losses) == CFG.max_iters and full.losses[-1] < full.losses[0]
    with pytest.raises(Crash):
        run(tmp_path / "b", crash_at=5)  # dies after step 5; the last checkpoint is step 4
    resumed, resumed_model = run(tmp_path / "b", resume=True)
    assert resumed.losses == full.losses  # bitwise: floats compared exactly
    assert resumed.val_losses == full.val_losses
    for (k, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    _, info = load_model(tmp_path / "b" / "model.safetensors")
    assert info.provenance["steps"] == CFG.max_iters


def test_resume_refuses_other_settings_and_other_data(tmp_path: Path) -> None:
    with pytest.raises(Crash):
        run(tmp_path, crash_at=5)
    with pytest.raises(ResumeError, match=r"settings differ .*\blr\b"):
        run(tmp_path, cfg=dataclasses.replace(CFG, lr=1e-2), resume=True)
    with pytest.raises(ResumeError, match="training data changed"):
        run(tmp_path, resume=True, data_id="other")
    model = build_model(dataclasses.replace(SMALL, n_embd=64), seed=1)
    with pytest.raises(ResumeError, match="different model shape"):
        load_train_state(tmp_path / "state.safetensors", model, make_optimizer(model, CFG), CFG, model.config)
    # steering settings may change: a longer run resumes
    state, _ = run(tmp_path, cfg=dataclasses.replace(CFG, max_iters=10), resume=True)
    assert state.step == 10


def test_resume_reads_a_setting_the_checkpoint_predates_as_its_default(tmp_path: Path) -> None:
    """A checkpoint written before a setting existed ran with that setting's default behaviour."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with pytest.raises(Crash):
        run(tmp_path, crash_at=5)
    path = tmp_path / "state.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    old_cfg = json.loads(meta["train_config"])
    del old_cfg["replay_ratio"], old_cfg["early_stop_patience"]  # as an older codeassist wrote it
    meta["train_config"] = json.dumps(old_cfg)
    save_file(tensors, str(path), metadata=meta)
    model = build_model(SMALL, seed=1)
    other = dataclasses.replace(CFG, replay_ratio=0.5)
    with pytest.raises(ResumeError, match=r"settings differ .*\breplay_ratio\b"):
        load_train_state(path, model, make_optimizer(model, other), other, model.config)
    state, _ = run(tmp_path, resume=True)
    assert state.step == CFG.max_iters


def test_non_finite_losses_skip_steps_and_stop_after_several(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real = loop._micro_loss
    calls = {"n": 0}
    bad_micro_calls = {4, 9}  # one micro-batch of step 2 and one of step 4 (2 per step)

    def flaky(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = real(module, x, y)
        return loss * math.nan if calls["n"] in bad_micro_calls else loss

    monkeypatch.setattr(loop, "_micro_loss", flaky)
    state, model = run(tmp_path / "skip")
    assert state.step == CFG.max_iters and len(state.losses) == CFG.max_iters - 2
    assert all(math.isfinite(v) for v in state.losses)
    assert all(torch.isfinite(p).all() for p in model.parameters())

    def broken_after_5(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        loss = real(module, x, y)
        return loss * math.inf if calls["n"] > 10 else loss  # steps 6, 7, ... are all non-finite

    calls["n"] = 0
    monkeypatch.setattr(loop, "_micro_loss", broken_after_5)
    cfg = dataclasses.replace(CFG, max_iters=20, max_bad_steps=3)
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row"):
        run(tmp_path / "stop", cfg=cfg)
    model = build_model(SMALL, seed=1)
    kept = load_train_state(tmp_path / "stop" / "state.safetensors", model, make_optimizer(model, cfg), cfg, SMALL)
    assert kept.step == 4 and len(kept.losses) == 4  # the last good checkpoint
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_last_n_checkpoints_are_kept(tmp_path: Path) -> None:
    cfg = dataclasses.replace(CFG, max_iters=12)
    run(tmp_path, cfg=cfg, keep_checkpoints=2)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["state-00000008.safetensors", "state-00000012.safetensors"]
    model = build_model(SMALL, seed=1)
    old = load_train_state(tmp_path / "checkpoints" / kept[0], model, make_optimizer(model, cfg), cfg, SMALL)
    assert old.step == 8
