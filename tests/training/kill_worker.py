"""Subprocess for test_kill: trains a small model forever, checkpointing every step."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from codeassist.model.config import ModelConfig
from codeassist.training.loop import TrainConfig, build_model, train

# wide enough that writing a checkpoint takes a noticeable part of each step
CONFIG = ModelConfig(block_size=64, vocab_size=2048, n_layer=2, n_head=2, n_embd=128)
CFG = TrainConfig(batch_size=2, seq_len=32, max_iters=10**9, lr=1e-3, warmup_iters=2, eval_interval=10**9,
                  ckpt_interval=1, seed=3, autocast_bf16=False)


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    data = np.random.default_rng(0).integers(0, CONFIG.vocab_size, 5000).astype(np.uint16)
    model = build_model(CONFIG, seed=0)

    def progress(p: dict[str, object]) -> None:
        print(p["step"], flush=True)

    train(model, data, None, CFG, out, torch.device("cpu"), resume=True, on_progress=progress, data_id="k")


if __name__ == "__main__":
    main()
