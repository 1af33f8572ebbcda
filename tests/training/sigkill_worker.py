"""Subprocess for test_sigkill_resume: a short training run that can stop itself at a named point
and wait there to be killed.

    python sigkill_worker.py OUT [POINT]

POINT is `step:K` (after step K's update, before its checkpoint), `save-state:K` (the training
checkpoint of step K written to its temporary file, not yet renamed) or `save-model:K` (the
training checkpoint of step K in place, the model file of step K not yet). The worker prints
`paused POINT` and blocks; without POINT it trains to the end and exits. The test runs the
uninterrupted reference in its own process with `train_run`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from codeassist.model import checkpoint
from codeassist.model.config import ModelConfig
from codeassist.training.loop import TrainConfig, build_model, train

# dropout on, so that its random masks must be reproduced too; evaluation every 3 steps
CONFIG = ModelConfig(block_size=64, vocab_size=512, n_layer=2, n_head=2, n_embd=64, dropout=0.1)
CFG = TrainConfig(batch_size=2, seq_len=32, max_iters=10, lr=1e-3, warmup_iters=2, eval_interval=3,
                  eval_batches=2, ckpt_interval=2, seed=5, autocast_bf16=False)


def pause(point: str) -> None:
    print("paused", point, flush=True)
    sys.stdin.readline()  # until killed (or stdin closes)
    raise SystemExit(3)


def train_run(out: Path, progress: Any = None) -> None:
    """The run, from the start or resumed from out/ (in this process: the uninterrupted reference)."""
    rng = np.random.default_rng(0)
    train_data = rng.integers(0, CONFIG.vocab_size, 4000).astype(np.uint16)
    val_data = rng.integers(0, CONFIG.vocab_size, 1000).astype(np.uint16)
    model = build_model(CONFIG, seed=0)
    train(model, train_data, val_data, CFG, out, torch.device("cpu"), resume=True, on_progress=progress,
          data_id="sigkill")


def main() -> None:
    out, point = Path(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else "")
    torch.set_num_threads(1)

    def pausing_save_file(tensors: dict[str, torch.Tensor], path: Any, metadata: dict[str, str]) -> None:
        if "state" in metadata:  # the training checkpoint
            label = f"save-state:{json.loads(metadata['state'])['step']}"
            save_file(tensors, path, metadata=metadata)
            if label == point:
                pause(point)
            return
        if point == f"save-model:{json.loads(metadata.get('provenance', '{}')).get('steps')}":
            pause(point)
        save_file(tensors, path, metadata=metadata)

    vars(checkpoint)["save_file"] = pausing_save_file  # what save_tensors_atomic calls

    def progress(p: dict[str, Any]) -> None:
        print("step", p["step"], flush=True)
        if point == f"step:{p['step']}":
            pause(point)

    train_run(out, progress)


if __name__ == "__main__":
    main()
