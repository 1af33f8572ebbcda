"""Fully sharded data parallel: models too large for one device, under the same torchrun command.

DDP keeps a whole copy of the weights, gradients and AdamW moments on every process; FSDP keeps
1/N of each and gathers a block's weights only while that block runs (PyTorch's own engine,
`fully_shard`, FSDP2: each parameter becomes a DTensor sharded on dim 0). The loop asks for it
with `parallel="fsdp"`; every batch, seed and micro-batch split stays the same as with DDP, so
the losses equal one process's up to the order of floating-point sums.

Gathering for a save is collective: every rank calls `full_state`, rank 0 writes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

PARALLEL_CHOICES = ("ddp", "fsdp")


def shard(model: nn.Module, device: torch.device) -> nn.Module:
    """Shard every transformer block, then the rest (embedding, head, final norm) as the root unit."""
    from torch.distributed.fsdp import fully_shard

    blocks = _blocks(model)
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def _blocks(model: nn.Module) -> list[nn.Module]:
    for attr in ("transformer", "model"):
        trunk = getattr(model, attr, None)
        for name in ("h", "layers"):
            layers = getattr(trunk, name, None) if trunk is not None else None
            if isinstance(layers, nn.ModuleList):
                return list(layers)
    raise ValueError(f"cannot find the transformer blocks of {type(model).__name__} to shard")


def set_grad_sync(module: nn.Module, sync: bool) -> None:
    """Skip the reduce-scatter on all but the last micro-batch of a step (DDP's no_sync)."""
    setter = getattr(module, "set_requires_gradient_sync", None)
    if setter is not None:
        setter(sync)


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full_state(model: nn.Module, opt: torch.optim.Optimizer | None = None
               ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The whole model (and optimizer) state on CPU, as one process would hold it. Collective."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd: dict[str, Any] = dict(get_model_state_dict(model, options=options))
    optim_sd: dict[str, Any] | None = (dict(get_optimizer_state_dict(model, opt, options=options))
                                       if opt is not None else None)
    return model_sd, optim_sd


def load_full_state(model: nn.Module, opt: torch.optim.Optimizer | None, model_sd: dict[str, torch.Tensor],
                    optim_sd: dict[str, Any] | None) -> None:
    """Load a whole state (every rank passes the same) into the sharded model and optimizer."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    options = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, dict[str, Any](model_sd), options=options)
    if opt is not None and optim_sd is not None:
        set_optimizer_state_dict(model, opt, optim_sd, options=options)


def param_names(model: nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """The name of each of the optimizer's parameters, in its order (the checkpoint's opt.<i>)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for g in opt.param_groups for p in g["params"]]


def gather_for_save(model: nn.Module, opt: torch.optim.Optimizer
                    ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """(whole model state, AdamW state by parameter index) on CPU; collective, meaningful on rank 0."""
    model_sd, optim_sd = full_state(model, opt)
    states = (optim_sd or {}).get("state", {})
    return model_sd, [states.get(name, {}) for name in param_names(model, opt)]


def state_loader(model: nn.Module, opt: torch.optim.Optimizer) -> Any:
    """A training/state.py StateLoader that puts whole tensors into the sharded model and optimizer."""
    def load(model_sd: dict[str, torch.Tensor], opt_state: dict[int, dict[str, torch.Tensor]]) -> None:
        names = param_names(model, opt)
        optim_sd = {
            "state": {names[i]: dict(entry) for i, entry in opt_state.items()},
            "param_groups": [{**{k: v for k, v in g.items() if k != "params"},
                              "params": [names[j] for j in range(start, start + len(g["params"]))]}
                             for g, start in zip(opt.param_groups, _starts(opt), strict=True)],
        }
        load_full_state(model, opt, model_sd, optim_sd if opt_state else None)

    return load


def _starts(opt: torch.optim.Optimizer) -> list[int]:
    out, n = [], 0
    for g in opt.param_groups:
        out.append(n)
        n += len(g["params"])
    return out
