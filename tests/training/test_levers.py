"""The levers against memorising a small project: replay of general code and early stopping
(training/batches.py, training/loop.py), their data (training/dataset.py), and exact resume with both on."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from codeassist.model.checkpoint import load_model
from codeassist.model.config import ModelConfig
from codeassist.training.collect import SourceFile
from codeassist.training.dataset import build_dataset, read_dataset, split_check
from codeassist.training.loop import TrainConfig, build_model, micro_batch, replay_rows, train
from codeassist.training.shards import Document, load_split

from .fixtures import code_file

SMALL = ModelConfig(block_size=64, vocab_size=128, n_layer=1, n_head=2, n_embd=32)
CFG = TrainConfig(batch_size=2, seq_len=32, grad_accum=2, max_iters=40, lr=3e-3, min_lr=3e-4, warmup_iters=2,
                  eval_interval=4, eval_batches=2, ckpt_interval=4, seed=5, autocast_bf16=False,
                  replay_ratio=0.25, early_stop_patience=2)


def pattern(mult: int, n: int, seed: int, lo: int = 0, hi: int = 128) -> np.ndarray:
    """A learnable sequence of tokens in [lo, hi): a repeating pattern with 20% noise."""
    rng = np.random.default_rng(seed)
    span = hi - lo
    base = lo + np.tile(np.arange(40) * mult % span, n // 40 + 1)[:n]
    noise = rng.integers(lo, hi, n)
    return np.where(rng.random(n) < 0.2, noise, base).astype(np.uint16)


PROJECT = pattern(3, 4000, 0, hi=64)  # the project's tokens are below 64 ...
REPLAY = pattern(11, 3000, 2, lo=64)  # ... general code's are 64 and above
VAL = pattern(3, 1000, 1, hi=64)
CHECK = pattern(5, 1000, 3)  # unlike the training data: training on the project soon stops helping it


def test_replay_rows_give_the_asked_ratio_over_any_run() -> None:
    for ratio, per_step in ((0.25, 4), (0.1, 4), (0.3, 8), (0.0, 4)):
        rows = [replay_rows(s, per_step, ratio) for s in range(100)]
        assert all(r in (int(per_step * ratio), int(per_step * ratio) + 1) for r in rows)
        for k in (7, 33, 100):
            assert sum(rows[:k]) == int(k * per_step * ratio + 1e-9)


def test_the_replay_mix_is_deterministic_and_has_the_ratio() -> None:
    cfg = dataclasses.replace(CFG, replay_ratio=0.3)

    def all_batches() -> tuple[list[torch.Tensor], int]:
        xs, seen = [], 0
        for step in range(50):
            for micro in range(cfg.grad_accum):
                xs.append(micro_batch(PROJECT, REPLAY, cfg, step, micro, seen)[0])
            seen += replay_rows(step, cfg.batch_size * cfg.grad_accum, cfg.replay_ratio)
        return xs, seen

    first, seen = all_batches()
    second, _ = all_batches()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    rows = torch.cat(first)
    from_replay = rows.min(dim=1).values >= 64
    assert int(from_replay.sum()) == seen == round(0.3 * len(rows))
    assert int((rows.max(dim=1).values < 64).sum()) == len(rows) - seen  # the others are the project's
    # consecutive windows of the replay shard, none repeated before the shard is used up
    windows = torch.from_numpy(REPLAY[:seen * cfg.seq_len].astype(np.int64)).view(seen, cfg.seq_len)
    assert torch.equal(rows[from_replay], windows)
    # without replay the project's batches are the same draws: replay only replaces rows
    plain = micro_batch(PROJECT, None, dataclasses.replace(cfg, replay_ratio=0.0), 3, 1, 0)[0]
    mixed = micro_batch(PROJECT, REPLAY, cfg, 3, 1, 0)[0]
    keep = mixed.max(dim=1).values < 64
    assert torch.equal(plain[keep], mixed[keep])


class Crash(Exception):
    pass


def run(out: Path, cfg: TrainConfig = CFG, resume: bool = False, crash_at: int | None = None
        ) -> tuple[Any, torch.nn.Module]:
    model = build_model(SMALL, seed=1)

    def progress(p: dict[str, Any]) -> None:
        if crash_at is not None and p["step"] == crash_at:
            raise Crash

    state = train(model, PROJECT, VAL, cfg, out, torch.device("cpu"), resume=resume, on_progress=progress,
                  data_id="d", replay_data=REPLAY, check_data=CHECK)
    return state, model


def test_early_stop_stops_when_the_check_stops_improving_and_keeps_the_best_weights(tmp_path: Path) -> None:
    state, model = run(tmp_path / "a")
    again, _ = run(tmp_path / "b")
    assert state.check_losses == again.check_losses  # deterministic
    assert state.stopped_early and state.step < CFG.max_iters
    losses = dict(state.check_losses)
    best = min(losses, key=lambda s: losses[s])
    assert state.best_step == best and state.best_loss == losses[best]
    # it stopped at the patience-th check after the best, no sooner, no later
    assert state.step == best + CFG.early_stop_patience * CFG.eval_interval
    assert all(losses[s] >= losses[best] for s in losses if s > best)
    # the model it returns and writes holds the best weights, not the last ones
    saved = load_file(str(tmp_path / "a" / "best.safetensors"))
    written, info = load_model(tmp_path / "a" / "model.safetensors")
    for k, v in saved.items():
        assert torch.equal(model.state_dict()[k], v), k
        assert torch.equal(written.state_dict()[k], v), k
    assert info.provenance["best_step"] == best and info.provenance["stopped_early"] is True
    last = load_file(str(tmp_path / "a" / "state.safetensors"))  # the checkpoint keeps the last weights
    assert not torch.equal(last["model.transformer.h.0.mlp.c_fc.weight"], saved["transformer.h.0.mlp.c_fc.weight"])


def test_a_check_that_keeps_improving_runs_to_the_end() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        model = build_model(SMALL, seed=1)
        state = train(model, PROJECT, VAL, CFG, Path(d), torch.device("cpu"), replay_data=REPLAY,
                      check_data=pattern(3, 1000, 4, hi=64))
    assert not state.stopped_early and state.step == CFG.max_iters == state.best_step


@pytest.mark.parametrize("crash_at", [6, 10])  # before the best check, and between the best and the stop
def test_resume_with_replay_and_early_stop_equals_the_uninterrupted_run_bitwise(tmp_path: Path,
                                                                                crash_at: int) -> None:
    full, full_model = run(tmp_path / "a")
    assert full.stopped_early and full.replay_seen > 0
    with pytest.raises(Crash):
        run(tmp_path / "b", crash_at=crash_at)
    resumed, resumed_model = run(tmp_path / "b", resume=True)
    assert resumed.losses == full.losses  # bitwise
    assert resumed.check_losses == full.check_losses and resumed.val_losses == full.val_losses
    assert (resumed.step, resumed.best_step, resumed.replay_seen, resumed.stopped_early) == \
        (full.step, full.best_step, full.replay_seen, True)
    for (k, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    # a finished, early-stopped run stays finished when resumed
    again, _ = run(tmp_path / "b", resume=True)
    assert again.step == full.step and again.losses == full.losses


def test_levers_need_their_data(tmp_path: Path) -> None:
    model = build_model(SMALL, seed=1)
    with pytest.raises(ValueError, match="replay"):
        train(model, PROJECT, VAL, CFG, tmp_path, torch.device("cpu"), check_data=CHECK)
    with pytest.raises(ValueError, match="check"):
        train(model, PROJECT, VAL, CFG, tmp_path, torch.device("cpu"), replay_data=REPLAY)


def _files(n: int) -> list[SourceFile]:
    return [SourceFile(path=f"pkg/m{i}.py", language="python", text=code_file(i)) for i in range(n)]


def test_the_check_split_is_apart_from_training_and_the_gates_files(tmp_path: Path) -> None:
    files = _files(30)
    train_files, check = split_check(files)
    assert len(check) >= 2 and not {f.path for f in train_files} & {f.path for f in check}
    assert split_check(files) == (train_files, check)  # stable
    replay = [Document(path=f"std/r{i}.py", text=code_file(100 + i)) for i in range(5)]
    ds = build_dataset(files, tmp_path / "d", workers=1, check=True, replay_ratio=0.25, replay=replay)
    plain = build_dataset(files, tmp_path / "p", workers=1)
    assert ds.check_tokens > 0 and ds.replay_tokens > 0 and ds.data_id != plain.data_id
    assert read_dataset(tmp_path / "d") == ds
    assert ds.train_files + len(check) == plain.train_files and ds.val_files == plain.val_files
    assert len(load_split(tmp_path / "d", "replay")) == ds.replay_tokens
    with pytest.raises(ValueError, match="too few files"):
        build_dataset(_files(2), tmp_path / "x", workers=1, check=True)


def test_only_code_is_held_out_for_the_gate() -> None:
    from codeassist.training.dataset import split_files

    docs = [SourceFile(path=f"docs/page{i}.rst", language="markdown", text="Title\n=====\n\nSome prose here.\n")
            for i in range(40)]
    code = _files(12)
    train, val = split_files(docs + code, val_fraction=0.3)
    assert val and all(f.language == "python" for f in val)
    assert {f.path for f in train} == {f.path for f in docs + code} - {f.path for f in val}
    # a project with one code file or none still holds out what it has
    _, val = split_files(docs + code[:1], val_fraction=0.3)
    assert val and any(f.language == "markdown" for f in val)
