"""Run under torchrun (or alone): loop.train on a tiny model and fixed data; rank 0 writes the losses.

    python -m torch.distributed.run --nproc_per_node=2 tests/training/fsdp_worker.py OUT ddp|fsdp [STEPS] [lora]
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


def main() -> None:
    out, parallel = Path(sys.argv[1]), sys.argv[2]
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else CFG.max_iters
    lora = len(sys.argv) > 4 and sys.argv[4] == "lora"
    torch.set_num_threads(1)
    env = ddp.init_distributed("cpu")
    torch.manual_seed(0)
    model = build_model(QWEN)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape) * 0.05 if p.dim() > 1 else torch.ones_like(p))
    if lora:
        apply_lora(model, rank=4, alpha=8, seed=1)
    pattern = np.tile(np.arange(24, dtype=np.uint16) * 5 % 96, 200)
    cfg = TrainConfig(**{**CFG.to_dict(), "max_iters": steps})
    state = train(model, pattern[:3000], pattern[3000:4000], cfg, out, env.device, resume=True, dist=env,
                  parallel=parallel)
    if env.is_main:
        (out / "losses.json").write_text(json.dumps({"losses": state.losses, "val": state.val_losses}))
    ddp.shutdown(env)


if __name__ == "__main__":
    main()
