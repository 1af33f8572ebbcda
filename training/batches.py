"""How each training step's data and schedule are chosen: its rows, its replay rows, the random
generators behind them and its learning rate.

Everything here is a function of the run's seed, the step and the micro-batch's global index
(and, for replay, the replay position the train state carries); nothing reads a process's own
random state. So a resumed run, in a new process whose generators start anywhere, draws exactly
the batches and dropout masks the uninterrupted run drew, and a run split over any number of
processes (training/loop.py splits a step's micro-batches over the ranks by that global index)
draws the same ones as a single process.

Replay (issue 20): a fixed share of each step's sequences is general code, read in order from a
replay shard, so no replay window repeats before the shard is used up.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from codeassist.training.loop import TrainConfig


def lr_at(it: int, cfg: TrainConfig, max_iters: int, time_fraction: float | None = None) -> float:
    """Warmup, then cosine decay to min_lr over the steps; with a time budget as well, over the
    budget or the steps, whichever is further along (the run ends at the first of the two)."""
    if it < cfg.warmup_iters:
        return cfg.lr * (it + 1) / cfg.warmup_iters
    ratio = min(1.0, (it - cfg.warmup_iters) / max(1, max_iters - cfg.warmup_iters))
    if time_fraction is not None:
        ratio = max(ratio, min(1.0, time_fraction))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.lr - cfg.min_lr)


def get_batch(data: np.ndarray, batch_size: int, seq_len: int, gen: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
    hi = len(data) - seq_len - 1
    if hi <= 0:
        raise ValueError(f"the data has {len(data)} tokens, fewer than one sequence of {seq_len + 1}")
    starts = torch.randint(hi, (batch_size,), generator=gen).tolist()
    x = torch.from_numpy(np.stack([data[s:s + seq_len].astype(np.int64) for s in starts]))
    y = torch.from_numpy(np.stack([data[s + 1:s + 1 + seq_len].astype(np.int64) for s in starts]))
    return x, y


def replay_rows(step: int, seqs_per_step: int, ratio: float) -> int:
    """How many of step `step`'s sequences are replay: over any run, round(ratio x sequences) so far."""
    def upto(k: int) -> int:
        return math.floor(round(k * seqs_per_step * ratio, 9))

    return upto(step + 1) - upto(step)


def micro_batch(train_data: np.ndarray, replay_data: np.ndarray | None, cfg: TrainConfig, step: int,
                micro: int, replay_seen: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Micro-batch `micro` (global index) of step `step`. The project's sequences are drawn as
    without replay; the step's first replay_rows() sequences are then replaced, in order, by
    consecutive windows of the replay shard starting at window `replay_seen`."""
    x, y = get_batch(train_data, cfg.batch_size, cfg.seq_len, batch_generator(cfg.seed, step, micro))
    if replay_data is None or cfg.replay_ratio <= 0:
        return x, y
    n_replay = replay_rows(step, cfg.batch_size * cfg.grad_accum, cfg.replay_ratio)
    windows = (len(replay_data) - 1) // cfg.seq_len
    if windows < 1:
        raise ValueError(f"the replay data has {len(replay_data)} tokens, fewer than one sequence of "
                         f"{cfg.seq_len + 1}")
    for i in range(cfg.batch_size):
        q = micro * cfg.batch_size + i  # the sequence's index within the step
        if q >= n_replay:
            break
        s = (replay_seen + q) % windows * cfg.seq_len
        x[i] = torch.from_numpy(replay_data[s:s + cfg.seq_len].astype(np.int64))
        y[i] = torch.from_numpy(replay_data[s + 1:s + 1 + cfg.seq_len].astype(np.int64))
    return x, y


def batch_generator(seed: int, step: int, micro: int, rank: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 64 + micro) * 1024 + rank)


def dropout_seed(seed: int, step: int, micro: int) -> int:
    """The seed of micro-batch `micro`'s dropout masks at `step`: fixed by the run's seed, so a run
    is reproducible and a resumed run (in a new process, whose generator starts anywhere) draws the
    masks the uninterrupted one drew. Distinct from the batch generators' seeds (they end in a rank)."""
    return ((seed * 1_000_003 + step) * 64 + micro) * 1024 + 1023
