"""`codeassist train PATH... [--init-from default|scratch|PATH|hf:ORG/NAME] [--time-budget 30m] [--max-iters N]
[--resume] [--out NAME] [--yes]`: fine-tune on your own repositories.

Runs as one process, or under torchrun as DDP:
    torchrun --nproc_per_node=2 -m codeassist.cli.main train ~/projects --yes
Only argparse is imported at the top; the work is in training/finetune.py.
"""

from __future__ import annotations

import argparse
import re

DEFAULT_TIME_BUDGET_S = 30 * 60.0  # `codeassist train` without --time-budget or --max-iters
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str) -> float:
    """'30m', '1h30m', '90s' or '90' (seconds) -> seconds."""
    m = _DURATION.match(text.strip().lower())
    if not text.strip() or m is None or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 30m, 1h30m or 90s")
    h, mins, s = (float(g) if g else 0.0 for g in m.groups())
    seconds = h * 3600 + mins * 60 + s
    if seconds <= 0:
        raise argparse.ArgumentTypeError("the time budget must be positive")
    return seconds


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def _share(text: str) -> float:
    """A number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 0 and below 1")
    return value


def _fim_rate(text: str) -> float:
    """A number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and 1")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH", help="repositories or folders of them")
    p.add_argument("--init-from", default="default", metavar="default|scratch|PATH|hf:ORG/NAME",
                   help="start from the embedded model (default), random weights, a model name/file, a "
                        "Hugging Face folder or hf:ORG/NAME (Qwen2, Llama, StarCoder: trained in its own tokenizer)")
    p.add_argument("--time-budget", type=parse_duration, default=None, metavar="30m",
                   help="train for this long (the learning rate schedule fits it); default 30m")
    p.add_argument("--max-iters", type=_positive, default=None, metavar="N", help="optimizer steps")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run of --out NAME")
    p.add_argument("--out", default="mine", metavar="NAME", help="the model's name (default: mine)")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--rollback", action="store_true", help="swap --out NAME back to its previous model")
    p.add_argument("--languages", default="", metavar="python,go",
                   help="only these languages (default: every one found, Python first)")
    adv = p.add_argument_group("advanced")
    adv.add_argument("--preset", default="default", help="model shape for --init-from scratch")
    adv.add_argument("--batch-size", type=_positive, default=4, help="sequences per step, all processes")
    adv.add_argument("--micro-batch", type=_positive, default=None,
                     help="sequences per forward pass (default: up to 4, the batch split over the processes)")
    adv.add_argument("--seq-len", type=_positive, default=1024)
    adv.add_argument("--lr", type=float, default=None,
                     help="peak learning rate (default: 1e-3 x 256 / model width; 1e-3 from scratch)")
    adv.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                     help="auto: bf16 autocast on CUDA where supported; on a CPU bf16 only where a one-time "
                          "measurement finds it clearly faster")
    adv.add_argument("--method", choices=("auto", "lora", "full"), default="auto",
                     help="full fine-tuning or LoRA adapters (merged into the written model); auto: LoRA above "
                          "100M parameters")
    adv.add_argument("--lora-rank", type=_positive, default=16, metavar="R", help="the adapters' rank (default 16)")
    adv.add_argument("--parallel", choices=("ddp", "fsdp"), default="ddp",
                     help="under torchrun: a whole copy per process (ddp) or weights and optimizer sharded (fsdp)")
    adv.add_argument("--eval-interval", type=_positive, default=100)
    adv.add_argument("--ckpt-interval", type=_positive, default=50)
    adv.add_argument("--keep-checkpoints", type=_positive, default=3)
    adv.add_argument("--max-epochs", type=_positive_float, default=4.0, metavar="E",
                     help="end the run after E passes over the training data, before the time budget if "
                          "that comes first (default 4: after more, a small project's held-out loss rose past the start's)")
    adv.add_argument("--gate-lines", type=int, default=300, help="held-out lines the gate completes")
    adv.add_argument("--seed", type=int, default=0)
    adv.add_argument("--workers", type=_positive, default=2, help="processes for collecting and tokenizing")
    adv.add_argument("--device", default="auto", help="auto, cpu or cuda")
    adv.add_argument("--threads", type=_positive, default=None, help="torch threads per process")
    adv.add_argument("--no-progress", action="store_true", help="no progress bar")
    lev = p.add_argument_group("levers against memorising a small project (off by default)")
    lev.add_argument("--replay", type=_share, default=0.0, metavar="R",
                     help="share of each step's sequences taken from the standard library (e.g. 0.25)")
    lev.add_argument("--early-stop", type=_positive, default=0, metavar="P",
                     help="hold out a few files as a check, measure it every --eval-interval steps, stop "
                          "after P checks without a new best and keep the best weights")
    lev.add_argument("--dropout", type=_share, default=0.0, metavar="P", help="dropout while training")
    lev.add_argument("--fim-rate", type=_fim_rate, default=None, metavar="R",
                     help="share of training samples in fill-in-the-middle order (default 0.5)")
    lev.add_argument("--warmup", type=_positive, default=None, metavar="N",
                     help="learning-rate warm-up steps (default: a tenth of the steps, at most 50)")


def run(args: argparse.Namespace) -> int:
    from codeassist.model.errors import UserError
    from codeassist.training import finetune
    from codeassist.training.fim import FIM_RATE

    if args.rollback:
        print(finetune.rollback(args.out))
        return 0
    if not args.paths:
        raise UserError("give at least one repository or folder to train on")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    time_budget = args.time_budget
    if time_budget is None and args.max_iters is None:
        time_budget = DEFAULT_TIME_BUDGET_S
    opts = finetune.FinetuneOptions(
        paths=tuple(args.paths), out=args.out, init_from=args.init_from, preset=args.preset,
        time_budget_s=time_budget, max_iters=args.max_iters, max_epochs=args.max_epochs,
        resume=args.resume, yes=args.yes,
        languages=tuple(x.strip() for x in args.languages.split(",") if x.strip()),
        batch_size=args.batch_size, micro_batch=args.micro_batch, seq_len=args.seq_len, lr=args.lr,
        precision=args.precision, eval_interval=args.eval_interval, ckpt_interval=args.ckpt_interval,
        keep_checkpoints=args.keep_checkpoints, gate_lines=args.gate_lines, seed=args.seed,
        workers=args.workers, device=args.device, progress=not args.no_progress,
        replay=args.replay, early_stop=args.early_stop, dropout=args.dropout,
        fim_rate=FIM_RATE if args.fim_rate is None else args.fim_rate, warmup_iters=args.warmup,
        method=args.method, lora_rank=args.lora_rank, parallel=args.parallel)
    try:
        return finetune.run_finetune(opts)
    except (ValueError, FileNotFoundError) as exc:
        raise UserError(str(exc)) from None
