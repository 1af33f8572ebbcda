"""Training checkpoints for exact resume, in safetensors (never pickles).

Tensors: `model.*` (weights), `opt.<i>.<name>` (AdamW moments and step per parameter, in
parameter order) and `rng.torch` (the CPU generator; the loop seeds dropout per micro-batch, see
`batches.dropout_seed`, so a resume does not depend on it). Metadata: the progress counters, loss
history, and the train and model configs a resume must match.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open

from codeassist.model.architectures import FamilyConfig, config_from_dict, family_name
from codeassist.model.causal_lm import CausalLM
from codeassist.model.checkpoint import ModelFileError, save_tensors_atomic
from codeassist.model.errors import UserFacingError

if TYPE_CHECKING:
    from codeassist.training.loop import TrainConfig


class ResumeError(UserFacingError):
    """A resume was asked for against a different config or data; str() is one sentence."""


@dataclass
class TrainState:
    step: int = 0
    max_iters: int = 0
    tokens_seen: int = 0
    elapsed_s: float = 0.0
    losses: list[float] = field(default_factory=list)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    data_id: str = ""
    replay_seen: int = 0  # sequences taken from the replay shard: the position its next one starts at
    check_losses: list[tuple[int, float]] = field(default_factory=list)  # the early stop's held-out check
    best_loss: float | None = None  # the lowest check loss, whose weights are in best.safetensors
    best_step: int = 0
    bad_evals: int = 0  # checks in a row without a new best
    stopped_early: bool = False


# fields whose change does not invalidate a resume (they only steer the remaining run)
_RESUMABLE_CHANGES = {"max_iters", "time_budget_s", "eval_interval", "eval_batches", "ckpt_interval"}


def save_train_state(path: Path, model: CausalLM, opt: torch.optim.Optimizer, state: TrainState,
                     cfg: TrainConfig) -> None:
    params = [p for g in opt.param_groups for p in g["params"]]
    write_train_state(path, model, dict(model.state_dict()), [opt.state.get(p, {}) for p in params], state, cfg)


def write_train_state(path: Path, model: CausalLM, model_state: dict[str, torch.Tensor],
                      opt_states: list[dict[str, Any]], state: TrainState, cfg: TrainConfig) -> None:
    """The checkpoint file from whole tensors: `opt_states[i]` is the AdamW state of the optimizer's
    i-th parameter. FSDP passes the states it gathered; the file is the same as one process's."""
    tensors: dict[str, torch.Tensor] = {}
    for k, v in model_state.items():
        if not (model.tied_embeddings and k == "lm_head.weight"):
            tensors[f"model.{k}"] = v
    for i, entry in enumerate(opt_states):
        for name, value in entry.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"opt.{i}.{name}"] = t
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "format": "codeassist-train-state",
        "state": json.dumps(state.__dict__),
        "train_config": json.dumps(cfg.to_dict(), sort_keys=True),
        "model_config": model.config.to_json(),
        "model_family": family_name(model.config),
    }
    save_tensors_atomic(path, tensors, meta)


# loads whole tensors into a model and optimizer that are not plain (FSDP): (model state, AdamW
# state by the optimizer's parameter index)
StateLoader = Callable[[dict[str, torch.Tensor], dict[int, dict[str, torch.Tensor]]], None]


def load_train_state(path: Path, model: CausalLM, opt: torch.optim.Optimizer, cfg: TrainConfig,
                     config: FamilyConfig, data_id: str = "", loader: StateLoader | None = None) -> TrainState:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises several types for damaged files
        raise ModelFileError(f"training checkpoint {path} is damaged ({str(exc)[:120]})") from None
    if meta.get("format") != "codeassist-train-state":
        raise ResumeError(f"{path} is not a codeassist training checkpoint")
    try:
        saved_model = config_from_dict(meta.get("model_family", "gpt2"), json.loads(meta["model_config"]))
    except (KeyError, ValueError, TypeError):
        raise ResumeError(f"{path} has a damaged model config") from None
    if saved_model != config:
        raise ResumeError("cannot resume: the checkpoint was trained with a different model shape")
    saved_cfg: dict[str, Any] = json.loads(meta["train_config"])
    # a setting the checkpoint does not record did not exist when it was written: it ran with
    # that setting's default (every new setting's default is the old behaviour)
    defaults = type(cfg)().to_dict()
    changed = sorted(k for k, v in cfg.to_dict().items()
                     if k not in _RESUMABLE_CHANGES and saved_cfg.get(k, defaults.get(k)) != v)
    if changed:
        raise ResumeError(f"cannot resume: training settings differ from the checkpoint ({', '.join(changed)})")
    raw = json.loads(meta["state"])
    raw["val_losses"] = [tuple(x) for x in raw.get("val_losses", [])]
    raw["check_losses"] = [tuple(x) for x in raw.get("check_losses", [])]
    state = TrainState(**raw)
    if data_id and state.data_id and data_id != state.data_id:
        raise ResumeError("cannot resume: the training data changed since the checkpoint was written")
    sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    if model.tied_embeddings:
        sd["lm_head.weight"] = sd[f"{model.EMBEDDING}.weight"]
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    if loader is not None:
        loader(sd, opt_state)
    else:
        model.load_state_dict(sd, strict=True)
        params = [p for g in opt.param_groups for p in g["params"]]
        for i, p in enumerate(params):
            if i in opt_state:
                opt.state[p] = {n: v.to(p.device) if n != "step" else v for n, v in opt_state[i].items()}
    torch.set_rng_state(tensors["rng.torch"])
    return state
