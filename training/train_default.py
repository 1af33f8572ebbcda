"""`python -m codeassist.training.train_default DATA OUT`: train the embedded default model.

Resumable: run the same command with --resume after an interruption.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from codeassist.model.checkpoint import load_model
from codeassist.model.config import get_preset
from codeassist.training.loop import TrainConfig, build_model, train
from codeassist.training.shards import load_split, read_manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--time-budget", type=float, default=90 * 60, help="seconds")
    ap.add_argument("--max-iters", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init-from", type=Path, default=None,
                    help="start from this fp32 model file (a longer run continuing an earlier one)")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1337,
                    help="batch k is drawn with (seed, k): a continuation needs a new seed to see new windows")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    config = get_preset(args.preset)
    cfg = TrainConfig(batch_size=args.batch_size, seq_len=args.seq_len, max_iters=args.max_iters,
                      time_budget_s=args.time_budget, lr=args.lr, min_lr=args.lr / 10, warmup_iters=args.warmup,
                      eval_interval=200, eval_batches=6, ckpt_interval=50, autocast_bf16=False,
                      seed=args.seed)
    manifest = read_manifest(args.data)
    if args.init_from is not None:
        model, info = load_model(args.init_from)
        if info.scheme != "none":
            ap.error(f"--init-from needs an fp32 model file; {args.init_from} is {info.scheme}")
        model.float()
    else:
        model = build_model(config, cfg.seed)
    t0 = time.time()

    def report(p: dict[str, Any]) -> None:
        if p["step"] % 10 == 0 or (p["val_loss"] is not None and p["step"] % cfg.eval_interval == 0):
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in p.items()}), flush=True)

    state = train(model, load_split(args.data, "train"), load_split(args.data, "val"), cfg, args.out,
                  torch.device("cpu"), resume=args.resume, on_progress=report,
                  provenance={"data": manifest.get("source"), "train_config": cfg.to_dict(),
                              "preset": args.preset,
                              "init_from": str(args.init_from) if args.init_from else None})
    print(f"done: {state.step} steps, {state.tokens_seen:,} tokens, val {state.val_losses[-1:]}, "
          f"{time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
