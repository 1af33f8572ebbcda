"""Run under torchrun: loop.train on a tiny Qwen2 and fixed data, every FSDP case in one launch.

    python -m torch.distributed.run --nproc_per_node=2 tests/training/fsdp_worker.py ROOT

One process group runs `PLAN` in order: FSDP to the step-3 checkpoint, a resume from that
checkpoint (a new model and optimizer, read back from disk) to step 6, and LoRA adapters for
4 steps. Each `run` writes OUT/losses-<steps>.json on rank 0, with the steps it took. The test
runs the single-process references with `run` in its own process while the launch is under way:
a process costs about 5 s of CPU before it trains (importing torch, and torch._dynamo for
AdamW), more than the training itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from codeassist.model.architectures import build_model
from codeassist.model.llama import LlamaConfig
from codeassist.training import ddp
from codeassist.training.loop import TrainConfig, train
from codeassist.training.lora import apply_lora

QWEN = LlamaConfig(family="qwen2", block_size=64, vocab_size=96, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                   head_dim=8, intermediate_size=64, qkv_bias=True, tie_word_embeddings=True)
CFG = TrainConfig(batch_size=2, seq_len=32, grad_accum=4, max_iters=6, lr=1e-2, min_lr=1e-3, warmup_iters=2,
                  eval_interval=3, eval_batches=2, ckpt_interval=3, seed=5, autocast_bf16=False)
# (folder, steps, lora): "plain" stops after step 3 (its checkpoint), then resumes from it to step 6
PLAN = (("plain", 3, False), ("plain", 6, False), ("lora", 4, True))


def losses_file(out: Path, steps: int) -> Path:
    return out / f"losses-{steps}.json"


def run(out: Path, parallel: str, steps: int, lora: bool, env: ddp.DistEnv) -> None:
    """One training run into `out` (resumed from its checkpoint if there is one)."""
    torch.manual_seed(0)
    model = build_model(QWEN)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * 0.05 if p.dim() > 1 else torch.ones_like(p))
    if lora:
        apply_lora(model, rank=4, alpha=8, seed=1)
    pattern = np.tile(np.arange(24, dtype=np.uint16) * 5 % 96, 200)
    cfg = TrainConfig(**{**CFG.to_dict(), "max_iters": steps})
    trained: list[int] = []  # the steps this run took (a resumed run starts after its checkpoint)
    state = train(model, pattern[:3000], pattern[3000:4000], cfg, out, env.device, resume=True, dist=env,
                  parallel=parallel, on_progress=lambda p: trained.append(p["step"]))
    if env.is_main:
        losses_file(out, steps).write_text(json.dumps({"losses": state.losses, "val": state.val_losses,
                                                       "trained": trained}))


def main() -> None:
    root = Path(sys.argv[1])
    torch.set_num_threads(1)
    env = ddp.init_distributed("cpu")
    for name, steps, lora in PLAN:
        run(root / name, "fsdp", steps, lora, env)
    ddp.shutdown(env)


if __name__ == "__main__":
    main()
