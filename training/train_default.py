"""`python -m codeassist.training.train_default DATA OUT`: train the embedded default model.

Resumable: run the same command with --resume after an interruption. OUT holds the full training
state (weights, optimizer, data position; keep it outside the repository). With --resume and
--init-from together, a run continues its state when OUT has one and otherwise starts from the
--init-from weights (a quantized file, such as the shipped `default`, is dequantized) with a
fresh optimizer and --warmup steps of warm-up. --stop-at ends a session before a wall-clock time
without ending the schedule: the next session resumes where it stopped.

Provenance: every saved model records `tokens_seen_total`, the tokens seen by every run since
initialisation (the --init-from model's total plus this run's).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from codeassist.model.checkpoint import ModelFileError, load_model, read_info
from codeassist.model.config import get_preset
from codeassist.model.gpt import GPT
from codeassist.model.quantized import dequantize_model
from codeassist.model.store import resolve_model
from codeassist.training.loop import TrainConfig, build_model, train
from codeassist.training.shards import load_split, read_manifest

# The shipped v2 predates `tokens_seen_total`; its three runs (model/MODEL_CARD.md), each
# 4 x 1,024 tokens a step: v0 999 steps, v1 1,785, v2 938.
V2_TOKENS_SEEN_TOTAL = (999 + 1785 + 938) * 4 * 1024  # 15,245,312
V2_QUANTIZED_FROM = "runs/default-v2/model.safetensors"


class StopAtDeadline(Exception):
    """Raised from the progress callback to end a session; the last checkpoint is the resume point."""


def tokens_seen_before(provenance: dict[str, Any]) -> int | None:
    """Tokens the model in a file has seen over all its runs, or None when the file does not say."""
    if "tokens_seen_total" in provenance:
        return int(provenance["tokens_seen_total"])
    if provenance.get("quantized_from") == V2_QUANTIZED_FROM and provenance.get("tokens_seen") == 938 * 4096:
        return V2_TOKENS_SEEN_TOTAL
    return None


def load_init(spec: str) -> tuple[GPT, dict[str, Any], str]:
    """(float model, its provenance, its path) for --init-from: a path or a model name."""
    path, _ = resolve_model(spec)
    loaded, info = load_model(path)
    if info.scheme != "none":
        logging.info("dequantizing %s (%s) to start from its weights", path, info.scheme)
        loaded = dequantize_model(loaded)
    if not isinstance(loaded, GPT):
        raise ModelFileError(f"{path} is a {info.family} model; the default model trains from GPT-2-family weights")
    return loaded.float().train(), dict(info.provenance), str(path)


def should_stop(step: int, ckpt_interval: int, step_s: float, deadline: float | None) -> bool:
    """Stop right after a checkpoint when the next one would come after the deadline."""
    if deadline is None or (step - 1) % ckpt_interval != 0 or step <= 1:
        return False
    return time.time() + ckpt_interval * step_s >= deadline


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--time-budget", type=float, default=90 * 60, help="seconds; 0: a schedule over --max-iters")
    ap.add_argument("--max-iters", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--init-from", default=None,
                    help="start from this model (a path or a name such as `default`) when not resuming a state")
    ap.add_argument("--tokens-seen-before", type=int, default=None,
                    help="tokens the --init-from model has seen in all (default: its provenance says)")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1337,
                    help="batch k is drawn with (seed, k): a continuation needs a new seed to see new windows")
    ap.add_argument("--ckpt-interval", type=int, default=50)
    ap.add_argument("--stop-at", default=None,
                    help="UTC time (ISO 8601, e.g. 2026-12-01T15:15Z) before which this session ends")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    deadline = None
    if args.stop_at:
        try:
            stop = datetime.fromisoformat(args.stop_at)
        except ValueError:
            ap.error(f"--stop-at {args.stop_at!r} is not an ISO 8601 time such as 2026-12-01T15:15Z")
        deadline = (stop if stop.tzinfo else stop.replace(tzinfo=UTC)).timestamp()
    cfg = TrainConfig(batch_size=args.batch_size, seq_len=args.seq_len, max_iters=args.max_iters,
                      time_budget_s=args.time_budget, lr=args.lr, min_lr=args.lr / 10, warmup_iters=args.warmup,
                      eval_interval=200, eval_batches=6, ckpt_interval=args.ckpt_interval, autocast_bf16=False,
                      seed=args.seed)
    manifest = read_manifest(args.data)
    before = 0
    if args.init_from is not None:
        model, init_prov, init_path = load_init(args.init_from)
        found = args.tokens_seen_before if args.tokens_seen_before is not None else tokens_seen_before(init_prov)
        if found is None:
            ap.error(f"{init_path} does not record tokens_seen_total; pass --tokens-seen-before")
        before = found
    else:
        model = build_model(get_preset(args.preset), cfg.seed)
    saved = args.out / "model.safetensors"
    if args.resume and (args.out / "state.safetensors").exists() and saved.exists():
        # the state's own count wins: the --init-from file may have been replaced since it began
        before = int(read_info(saved).provenance.get("tokens_seen_before", before))
    tokens_per_step = cfg.batch_size * cfg.seq_len * cfg.grad_accum
    corpus_id = str(manifest.get("corpus_id") or "")
    provenance: dict[str, Any] = {
        "data": manifest.get("source"), "corpus_id": corpus_id or None, "train_config": cfg.to_dict(),
        "preset": args.preset, "init_from": str(args.init_from) if args.init_from else None,
        "tokens_seen_before": before, "tokens_seen_total": before}
    t0 = time.time()
    last = {"t": time.monotonic(), "step_s": 0.0}

    def report(p: dict[str, Any]) -> None:
        # the loop saves the model right after this call: the provenance it saves is this step's
        provenance["tokens_seen_total"] = before + p["step"] * tokens_per_step
        now = time.monotonic()
        last["step_s"] = 0.9 * last["step_s"] + 0.1 * (now - last["t"]) if last["step_s"] else now - last["t"]
        last["t"] = now
        if p["step"] % 10 == 0 or (p["val_loss"] is not None and p["step"] % cfg.eval_interval == 0):
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in p.items()}
                             | {"tokens_seen_total": provenance["tokens_seen_total"]}), flush=True)
        if should_stop(p["step"], cfg.ckpt_interval, last["step_s"], deadline):
            raise StopAtDeadline(f"stopped at step {p['step']} before {args.stop_at}; "
                                 f"the checkpoint of step {p['step'] - 1} is the resume point")

    try:
        state = train(model, load_split(args.data, "train"), load_split(args.data, "val"), cfg, args.out,
                      torch.device("cpu"), resume=args.resume, on_progress=report, provenance=provenance,
                      data_id=corpus_id)
    except StopAtDeadline as stop:
        print(f"{stop}; run the same command with --resume to continue ({time.time() - t0:.0f}s)")
        return 0
    print(f"done: {state.step} steps, {state.tokens_seen:,} tokens "
          f"({before + state.tokens_seen:,} since initialisation), val {state.val_losses[-1:]}, "
          f"{time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
