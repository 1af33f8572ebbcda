"""One script, one process or many: the distributed context when run under `torchrun`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is a single process and
nothing here touches torch.distributed. The backend is gloo on CPU and nccl on CUDA.

The trainer splits each optimizer step's micro-batches over the ranks by a global index (see
`loop.train`), so the same command gives the same model whatever the number of processes, up to
the order of floating-point sums in the gradient all-reduce.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if name in ("cuda", "auto"):
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def init_distributed(device: str = "auto") -> DistEnv:
    """The process's place in the run; joins the process group when started by torchrun."""
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) <= 1:
        return DistEnv(device=pick_device(device))
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    dev = pick_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=dev)


def all_reduce_sum(env: DistEnv, values: list[float]) -> list[float]:
    """Element-wise sums over ranks (identical on every rank afterwards)."""
    if not env.is_distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=env.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return [float(x) for x in t.tolist()]


def shutdown(env: DistEnv) -> None:
    if env.is_distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
