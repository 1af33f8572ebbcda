"""The training loop: nanoGPT-shaped, on uint16 or uint32 token shards (training/shards.py), resumable exactly.

AdamW with decoupled weight decay on matrices only, linear warmup then cosine decay,
gradient accumulation, gradient clipping, bf16 autocast on CPU and CUDA when asked,
periodic evaluation on held-out files, and atomic checkpoints. A step's batches, replay rows,
dropout masks and learning rate are functions of (seed, step, micro-batch) alone
(training/batches.py), so the data position after a resume is exact by construction.

Two levers against a small project's memorisation (issue 20), both off by default:
- replay: a fixed share of each step's sequences is general code (a replay shard), read in order
  from the position the state carries (`replay_seen`), so no replay window repeats before the
  shard is used up and a resume continues where the run was;
- early stopping: every eval_interval steps the loss on a held-out check split (files of the
  project apart from the gate's) is measured; the best weights are kept in best.safetensors, the
  run stops after `early_stop_patience` checks without a new best, and the model it writes is the
  best one. The counters are in the state, so a resumed run stops where the whole run would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from codeassist.evaluation.loss import heldout_loss
from codeassist.model.checkpoint import save_tensors_atomic
from codeassist.model.config import ModelConfig
from codeassist.model.errors import UserFacingError
from codeassist.model.gpt import GPT
from codeassist.training import fsdp
from codeassist.training.batches import (
    batch_generator,
    dropout_seed,
    get_batch,
    lr_at,
    micro_batch,
    replay_rows,
)
from codeassist.training.ddp import DistEnv, all_reduce_sum
from codeassist.training.lora import save_merged
from codeassist.training.state import TrainState, load_train_state, save_train_state, write_train_state

# with the batch helpers (batches.py): tests and benchmarks/bench_train.py import them from here
__all__ = ["BEST", "NonFiniteLossError", "ProgressFn", "TrainConfig", "batch_generator", "build_model",
           "dist_sum", "dropout_seed", "evaluate", "get_batch", "keep_last_checkpoints", "lr_at",
           "make_optimizer", "micro_batch", "remove_partial_saves", "replay_rows", "restore_best", "train"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 8  # sequences per micro-batch
    seq_len: int = 1024
    grad_accum: int = 1
    max_iters: int = 1000  # optimizer steps; with time_budget_s too, the run ends at the first
    time_budget_s: float | None = None
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_interval: int = 200
    eval_batches: int = 8
    ckpt_interval: int = 100
    seed: int = 1337
    autocast_bf16: bool = True
    max_bad_steps: int = 5  # non-finite losses in a row before the run stops
    replay_ratio: float = 0.0  # share of each step's sequences taken from the replay shard
    early_stop_patience: int = 0  # checks without a new best before the run stops; 0: off

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def make_optimizer(model: GPT, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


def evaluate(model: GPT, data: np.ndarray, cfg: TrainConfig, device: torch.device) -> float:
    """The held-out loss (evaluation.loss) over a fixed set of validation batches (the same
    batches every time), in the training precision."""
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    seq = min(cfg.seq_len, len(data) - 2)
    batches = [get_batch(data, cfg.batch_size, seq, gen) for _ in range(cfg.eval_batches)]
    with _autocast(device, cfg.autocast_bf16):
        loss = heldout_loss(model, batches, device)
    model.train()
    return loss


def _autocast(device: torch.device, enabled: bool) -> torch.autocast:
    # autocast must be asked for on CPU explicitly; a CUDA-only flag would train fp32 on CPU silently
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


ProgressFn = Callable[[dict[str, Any]], None]


class NonFiniteLossError(UserFacingError, FloatingPointError):
    """Several non-finite losses in a row; str() is one sentence for the user."""


def _micro_loss(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # GPT.loss, called through the (possibly DDP-wrapped) module's forward
    loss: torch.Tensor = module(x, targets=y)
    return loss


def train(model: GPT, train_data: np.ndarray, val_data: np.ndarray | None, cfg: TrainConfig,
          out_dir: Path, device: torch.device, resume: bool = False,
          provenance: dict[str, Any] | None = None, on_progress: ProgressFn | None = None,
          data_id: str = "", dist: DistEnv | None = None, keep_checkpoints: int = 1,
          replay_data: np.ndarray | None = None, check_data: np.ndarray | None = None,
          parallel: str = "ddp", tokenizer_meta: dict[str, str] | None = None) -> TrainState:
    """Train `model` in place; writes out_dir/state.safetensors (resume) and out_dir/model.safetensors.

    Under torchrun (`dist` with several ranks) each optimizer step's `cfg.grad_accum` micro-batches
    are split over the ranks by a global index, and DDP averages the gradients: the same config
    gives the same run on any number of processes. Only rank 0 evaluates, reports and saves.
    `data_id` is stored in the checkpoint; a resume against other data is refused. The last
    `keep_checkpoints` training checkpoints are kept in out_dir/checkpoints as well.
    `replay_data` and `check_data`: the replay shard and the early stop's check split (see above).
    `parallel`: with several ranks, "ddp" (a whole copy per process) or "fsdp" (weights, gradients
    and optimizer state sharded: training/fsdp.py); the checkpoints are the same files either way.
    `tokenizer_meta`: the model's tokenizer (`Tokenizer.to_metadata()`) for model.safetensors to
    carry; None for ours.
    """
    if cfg.replay_ratio > 0 and replay_data is None:
        raise ValueError("a replay ratio needs replay data")
    if cfg.early_stop_patience > 0 and check_data is None:
        raise ValueError("early stopping needs a held-out check split")
    dist = dist or DistEnv(device=device)
    if cfg.grad_accum % dist.world_size:
        raise ValueError(f"the {cfg.grad_accum} micro-batches of a step do not split evenly over "
                         f"{dist.world_size} processes")
    local_accum = cfg.grad_accum // dist.world_size
    out_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main:
        remove_partial_saves(out_dir)
    if parallel not in fsdp.PARALLEL_CHOICES:
        raise ValueError(f"unknown parallel mode {parallel!r}; use {' or '.join(fsdp.PARALLEL_CHOICES)}")
    sharded = dist.is_distributed and parallel == "fsdp"
    if sharded and cfg.early_stop_patience > 0:
        raise ValueError("early stopping is not available with --parallel fsdp yet")
    model.to(device).train()
    if sharded:
        fsdp.shard(model, device)
    opt = make_optimizer(model, cfg)
    state = TrainState(max_iters=cfg.max_iters, data_id=data_id)
    state_path = out_dir / "state.safetensors"
    # every rank resumes or none does, as rank 0 sees the checkpoint: a rank that looked by itself
    # while rank 0 was still writing the last save of a run just ended in this process started
    # afresh, and the ranks' collectives then waited on each other for ever. The sum is a
    # collective, so rank 0 has finished that save by the time any rank reads the file.
    found = bool(resume and dist.is_main and state_path.exists())
    if dist_sum(dist, [float(found)])[0] > 0:
        state = load_train_state(state_path, model, opt, cfg, model.config, data_id=data_id,
                                 loader=fsdp.state_loader(model, opt) if sharded else None)
        log.info("resumed at step %d", state.step)
        if not cfg.time_budget_s and not state.stopped_early:
            state.max_iters = cfg.max_iters  # a resume may extend or shorten the run
    module: torch.nn.Module = model
    if dist.is_distributed and not sharded:
        from torch.nn.parallel import DistributedDataParallel

        module = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    t_start = time.monotonic() - state.elapsed_s
    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum
    bad_steps = 0
    while state.step < state.max_iters:
        it = state.step
        # the elapsed time of the last step end, the same number on every rank
        time_fraction = state.elapsed_s / cfg.time_budget_s if cfg.time_budget_s else None
        lr = lr_at(it, cfg, state.max_iters, time_fraction)
        for group in opt.param_groups:
            group["lr"] = lr
        t0 = time.monotonic()
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for micro in range(local_accum):
            g = dist.rank * local_accum + micro  # global micro-batch index: rank-count independent
            x, y = micro_batch(train_data, replay_data, cfg, it, g, state.replay_seen)
            if model.config.dropout > 0:
                torch.manual_seed(dropout_seed(cfg.seed, it, g))
            sync = micro == local_accum - 1 or not dist.is_distributed
            if sharded:
                fsdp.set_grad_sync(model, sync)
                ctx: Any = contextlib.nullcontext()
            else:
                ctx = contextlib.nullcontext() if sync else module.no_sync()  # type: ignore[operator]
            with ctx:
                with _autocast(device, cfg.autocast_bf16):
                    raw = _micro_loss(module, x.to(device), y.to(device))
                (raw / local_accum).backward()  # type: ignore[no-untyped-call]
            loss_sum += (raw / cfg.grad_accum).item()
        loss_sum, elapsed = dist_sum(dist, [loss_sum, time.monotonic() - t_start])
        elapsed /= dist.world_size
        if not math.isfinite(loss_sum):
            bad_steps += 1
            log.warning("step %d: non-finite loss, step skipped", it)
            if bad_steps >= cfg.max_bad_steps:
                raise NonFiniteLossError(f"training stopped: {bad_steps} non-finite losses in a row; the last "
                                         "good checkpoint is kept")
            state.step += 1
            continue
        bad_steps = 0
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        dt = time.monotonic() - t0
        state.step += 1
        state.replay_seen += replay_rows(it, cfg.batch_size * cfg.grad_accum, cfg.replay_ratio)
        state.tokens_seen += tokens_per_step
        state.losses.append(loss_sum)
        state.elapsed_s = elapsed
        if cfg.time_budget_s and state.elapsed_s >= cfg.time_budget_s:
            # a time budget decays the rate by elapsed time, so a machine that slows down mid-run
            # (an editor, a build) still ends the schedule on time
            state.max_iters = state.step
        last = state.step >= state.max_iters
        check_now = cfg.early_stop_patience > 0 and (state.step % cfg.eval_interval == 0 or last)
        if check_now and _check(model, check_data, cfg, device, state, dist, out_dir) and not last:
            state.max_iters = state.step  # stopped early (_check said so; the last step checks too)
            last = True
        val_now = val_data is not None and (state.step % cfg.eval_interval == 0 or last)
        save_now = state.step % cfg.ckpt_interval == 0 or last
        if sharded:  # a sharded model's forward and gathering are collective: every rank takes part
            val_loss = evaluate(model, val_data, cfg, device) if val_now and val_data is not None else None
            whole = fsdp.gather_for_save(model, opt) if save_now else None
        if not dist.is_main:
            continue
        if val_now and val_data is not None:
            state.val_losses.append((state.step, val_loss if sharded and val_loss is not None
                                     else evaluate(model, val_data, cfg, device)))
        if on_progress is not None:
            on_progress({"step": state.step, "max_iters": state.max_iters, "loss": loss_sum, "lr": lr,
                         "tok_s": tokens_per_step / dt, "elapsed_s": state.elapsed_s,
                         "val_loss": state.val_losses[-1][1] if state.val_losses else None})
        if save_now and sharded and whole is not None:
            write_train_state(state_path, model, whole[0], whole[1], state, cfg)
            keep_last_checkpoints(state_path, state.step, keep_checkpoints)
            save_merged(model, out_dir / "model.safetensors", provenance=_provenance(state, provenance),
                        tokenizer=tokenizer_meta, state=whole[0])
        elif save_now:
            save_train_state(state_path, model, opt, state, cfg)
            keep_last_checkpoints(state_path, state.step, keep_checkpoints)
            if last and cfg.early_stop_patience > 0:
                restore_best(model, out_dir, state)
            # with LoRA adapters, the file holds the merged weights: an ordinary model file
            save_merged(model, out_dir / "model.safetensors", provenance=_provenance(state, provenance),
                        tokenizer=tokenizer_meta)
    return state


BEST = "best.safetensors"


def _check(model: GPT, check_data: np.ndarray | None, cfg: TrainConfig, device: torch.device,
           state: TrainState, dist: DistEnv, out_dir: Path) -> bool:
    """One early-stop check (rank 0 measures, every rank learns the loss); True: stop now."""
    assert check_data is not None
    loss = evaluate(model, check_data, cfg, device) if dist.is_main else 0.0
    loss = dist_sum(dist, [loss])[0]
    state.check_losses.append((state.step, loss))
    if state.best_loss is None or loss < state.best_loss:
        state.best_loss, state.best_step, state.bad_evals = loss, state.step, 0
        if dist.is_main:
            save_tensors_atomic(out_dir / BEST, {k: v.detach().cpu() for k, v in model.state_dict().items()
                                                 if k != "lm_head.weight"}, {"step": str(state.step)})
        return False
    state.bad_evals += 1
    if state.bad_evals >= cfg.early_stop_patience:
        state.stopped_early = True
        log.info("early stop at step %d: the best check loss was at step %d", state.step, state.best_step)
        return True
    return False


def restore_best(model: GPT, out_dir: Path, state: TrainState) -> None:
    """Load the best checked weights into `model` (they are already there if the last check was the best)."""
    if state.best_loss is None or state.best_step == state.step:
        return
    from safetensors import safe_open

    with safe_open(str(out_dir / BEST), framework="pt") as f:
        if (f.metadata() or {}).get("step") != str(state.best_step):
            raise ValueError(f"{out_dir / BEST} does not hold the weights of step {state.best_step}")
        sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    model.load_state_dict(sd, strict=True)


def dist_sum(dist: DistEnv, values: list[float]) -> list[float]:
    return all_reduce_sum(dist, values) if dist.is_distributed else values


def remove_partial_saves(out_dir: Path) -> None:
    """Delete temporary files left by a save that was killed (the renamed files are complete)."""
    for pattern in (".*.safetensors.*.tmp", ".tmp*"):
        for p in out_dir.glob(pattern):
            if p.is_file():
                p.unlink(missing_ok=True)


def keep_last_checkpoints(state_path: Path, step: int, keep: int) -> None:
    """Keep the newest `keep` checkpoints in state_path.parent/checkpoints (hard links: no copies)."""
    if keep <= 1:
        return
    folder = state_path.parent / "checkpoints"
    folder.mkdir(exist_ok=True)
    target = folder / f"state-{step:08d}.safetensors"
    target.unlink(missing_ok=True)
    try:
        os.link(state_path, target)
    except OSError:  # a file system without hard links
        shutil.copyfile(state_path, target)
    for old in sorted(folder.glob("state-*.safetensors"))[:-keep]:
        old.unlink(missing_ok=True)


def _provenance(state: TrainState, extra: dict[str, Any] | None) -> dict[str, Any]:
    prov = dict(extra or {})
    if state.best_loss is not None:
        prov.update({"best_step": state.best_step, "check_loss": state.best_loss,
                     "stopped_early": state.stopped_early})
    prov.update({"steps": state.step, "tokens_seen": state.tokens_seen,
                 "val_loss": state.val_losses[-1][1] if state.val_losses else None,
                 "train_loss": float(np.mean(state.losses[-20:])) if state.losses else None})
    return prov


def build_model(config: ModelConfig, seed: int) -> GPT:
    model = GPT(config)
    model.init_weights(seed)
    return model
