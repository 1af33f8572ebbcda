"""`codeassist train PATH...`: collect, tokenize, train (one process or torchrun DDP), gate, install.

Everything of one run lives in <data dir>/runs/<name>/: data/ (shards, manifest), the training
checkpoint (state.safetensors, the last few in checkpoints/), the candidate model and its loss
curve. The user's model is <data dir>/models/<name>.safetensors; the one it replaces is kept as
<name>.previous.safetensors, and `--rollback` swaps them back.

Any family trains: the init model (ours, a model file of an open family, a Hugging Face folder or
hf:ORG/NAME) brings its tokenizer, the shards are written in it, and the model file written
carries it. Above 100M parameters `--method auto` trains LoRA adapters (training/lora.py) and
writes the merged weights, an ordinary model file of the same shape.

This module runs the command and owns its side effects (terminal, run folder, processes, the
installed model); what a run settles from its options before the first step (the init model,
dropout, LoRA, the loop's settings, whether a resume matches) is in training/finetune_setup.py.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from codeassist.model.checkpoint import ModelFileError
from codeassist.model.store import data_dir, named_model_path, resolve_model
from codeassist.training import ddp
from codeassist.training.collect import collect, format_report
from codeassist.training.dataset import build_dataset, read_dataset, read_val_files
from codeassist.training.finetune_setup import FinetuneOptions as FinetuneOptions  # re-export: cli.py
from codeassist.training.finetune_setup import TrainError as TrainError  # re-export: __init__.py
from codeassist.training.finetune_setup import (
    _apply_method,
    _check_resume_method,
    _check_resume_tokenizer,
    _train_config,
    load_init_model,
    set_dropout,
    tokenizer_meta,
)
from codeassist.training.loop import TrainConfig, train
from codeassist.training.plot import save_loss_curve
from codeassist.training.shards import load_split

log = logging.getLogger(__name__)


def run_dir(name: str) -> Path:
    return data_dir() / "runs" / name


def _confirm_tty(question: str) -> bool:
    if not sys.stdin.isatty():
        raise TrainError("no terminal to confirm on; pass --yes to train without asking")
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


class ProgressBar:
    """loss, tokens/s and ETA on stderr (tqdm), by steps or, with a time budget, by seconds."""

    def __init__(self, cfg: TrainConfig, enabled: bool) -> None:
        from tqdm import tqdm

        # with a time budget the run ends at the budget or at max_iters, whichever comes first, so
        # the bar counts per mille of the further along of the two
        self.budget = cfg.time_budget_s
        total = 1000 if self.budget else cfg.max_iters
        self.bar = tqdm(total=total, unit="‰" if self.budget else "step", disable=not enabled,
                        file=sys.stderr, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}{postfix}]")

    def __call__(self, p: dict[str, Any]) -> None:
        if self.budget:
            target = int(1000 * min(1.0, max(p["elapsed_s"] / self.budget, p["step"] / p["max_iters"])))
        else:
            target = p["step"]
        self.bar.update(target - self.bar.n)
        post = f"loss {p['loss']:.3f}, {p['tok_s']:,.0f} tok/s"
        if p["val_loss"] is not None:
            post += f", val {p['val_loss']:.3f}"
        self.bar.set_postfix_str(post, refresh=False)

    def close(self) -> None:
        self.bar.close()


def run_finetune(opts: FinetuneOptions, out: TextIO | None = None,
                 confirm: Callable[[str], bool] = _confirm_tty) -> int:
    out = out or sys.stdout
    env = ddp.init_distributed(opts.device)
    try:
        return _run(opts, env, out, confirm)
    finally:
        ddp.shutdown(env)


def _run(opts: FinetuneOptions, env: ddp.DistEnv, out: TextIO, confirm: Callable[[str], bool]) -> int:
    named_model_path(opts.out)  # validates the name before any work
    folder = run_dir(opts.out)
    data = folder / "data"

    def say(text: str) -> None:
        if env.is_main:
            print(text, file=out, flush=True)

    if env.is_distributed and not opts.yes:
        raise TrainError("under torchrun pass --yes: only one process could ask for confirmation")
    if opts.resume and not (folder / "state.safetensors").exists():
        raise TrainError(f"there is no interrupted run named {opts.out!r} to resume ({folder})")
    # the model first: its tokenizer is the data's, and a bad --init-from fails before collecting
    model, origin, tokenizer = load_init_model(opts.init_from, opts.preset, opts.seed)
    if opts.resume:
        _check_resume_tokenizer(data, tokenizer)
    ok = True
    if env.is_main:
        result = collect(opts.paths, opts.languages or None, workers=opts.workers)
        say(format_report(result.report, result.languages))
        if not result.files:
            raise TrainError("no source files were found to train on in the given paths")
        ok = opts.yes or confirm(f"Train model {opts.out!r} on these {len(result.files):,} files?")
        if ok:
            if not opts.resume:
                shutil.rmtree(folder, ignore_errors=True)  # a new run starts clean
            build_dataset(result.files, data, seed=opts.seed, val_fraction=opts.val_fraction,
                          workers=opts.workers, progress=opts.progress, source=", ".join(opts.paths),
                          fim_rate=opts.fim_rate, check=opts.early_stop > 0, replay_ratio=opts.replay,
                          tokenizer=tokenizer)
    if env.is_distributed:
        ok = bool(ddp.all_reduce_sum(env, [1.0 if ok else 0.0])[0] > 0)
    if not ok:
        say("cancelled; nothing was trained")
        return 1
    dataset = read_dataset(data)
    set_dropout(model, opts.dropout)
    method = _apply_method(model, opts)
    if opts.resume:
        _check_resume_method(folder / "state.safetensors", model)
    if not tokenizer.fim and opts.fim_rate > 0:
        say(f"{origin} has no fill-in-the-middle markers that codeassist knows; it trains left to right")
    if opts.parallel == "fsdp" and not env.is_distributed:
        say("--parallel fsdp shards over several processes under torchrun; with one process it is ignored")
    cfg = _train_config(opts, model, dataset.train_tokens, env.world_size, env.device)
    val = load_split(data, "val") if dataset.val_tokens > cfg.seq_len + 1 else None
    check = load_split(data, "check") if dataset.check_tokens else None
    if opts.early_stop and (check is None or len(check) < 3):
        raise TrainError("the early stop's check files hold too little code; train without --early-stop")
    replay = load_split(data, "replay") if dataset.replay_tokens else None
    passes = f", {dataset.passes} FIM passes" if dataset.passes > 1 else ""
    say(f"training {origin} on {dataset.train_tokens:,} tokens ({dataset.train_files} files{passes}; "
        f"{dataset.val_files} held out) with {env.world_size} process(es) on {env.device}{method}")
    if replay is not None:
        say(f"{opts.replay:.0%} of each step is general code: {len(replay):,} tokens of the standard library, "
            "against forgetting")
    if not opts.max_iters:
        steps = f"{cfg.max_iters:,} steps ({opts.max_epochs:g} passes over the data)"
        say(f"the run ends after {opts.time_budget_s / 60:g} minutes or {steps}, whichever comes first"
            if opts.time_budget_s else f"the run ends after {steps}")
    bar = ProgressBar(cfg, opts.progress and env.is_main)
    try:
        state = train(model, load_split(data, "train"), val, cfg, folder, env.device, resume=opts.resume,
                      provenance={"data": dataset.data_id, "init_from": origin, "source": list(opts.paths)},
                      on_progress=bar, data_id=dataset.data_id, dist=env,
                      keep_checkpoints=opts.keep_checkpoints, replay_data=replay, check_data=check,
                      parallel=opts.parallel, tokenizer_meta=tokenizer_meta(tokenizer))
    except KeyboardInterrupt:
        bar.close()
        say(f"interrupted; continue with: codeassist train {' '.join(opts.paths)} --out {opts.out} --resume")
        return 130
    bar.close()
    if not env.is_main:
        return 0
    no_chart = save_loss_curve(folder / "loss.png", state.losses, state.val_losses)
    if no_chart:
        say(no_chart)
    say(f"trained {state.step} steps, {state.tokens_seen:,} tokens in {state.elapsed_s:.0f} s; "
        f"last loss {state.losses[-1] if state.losses else math.nan:.3f}")
    if state.best_loss is not None:
        how = "stopped early: " if state.stopped_early else ""
        say(f"{how}kept the weights of step {state.best_step}, the lowest check loss ({state.best_loss:.3f})")
    record = {"options": {k: v for k, v in dataclasses.asdict(opts).items() if k not in ("progress", "yes")},
              "init_from": origin,
              "data": {"train_tokens": dataset.train_tokens, "train_files": dataset.train_files,
                       "val_files": dataset.val_files, "passes": dataset.passes,
                       "check_tokens": dataset.check_tokens, "replay_tokens": dataset.replay_tokens},
              "train": {"steps": state.step, "tokens_seen": state.tokens_seen, "elapsed_s": state.elapsed_s,
                        "passes": state.tokens_seen / max(1, dataset.train_tokens),
                        "best_step": state.best_step if state.best_loss is not None else None,
                        "stopped_early": state.stopped_early,
                        "last_val_loss": state.val_losses[-1][1] if state.val_losses else None}}
    return _gate_and_install(opts, folder, data, out, record)


REPORT = "report.json"  # the run's figures for scripts (benchmarks/bench_finetune.py reads it)


def _gate_and_install(opts: FinetuneOptions, folder: Path, data: Path, out: TextIO,
                      record: dict[str, Any] | None = None) -> int:
    from codeassist.evaluation.lines import line_samples
    from codeassist.training.verdict import closing_report, gate_with_verdict

    candidate = folder / "model.safetensors"
    current = _current_model(opts)
    if current is None:
        install_model(candidate, opts.out, folder / "loss.png")
        print(f"installed as {opts.out!r} ({named_model_path(opts.out)}); there was no model to compare with",
              file=out)
        return 0
    val_files = read_val_files(data)
    samples = line_samples(val_files, opts.gate_lines, opts.seed)
    result, verdict = gate_with_verdict(candidate, current, load_split(data, "val"), samples, device="cpu",
                                        val_files=val_files, val_tokenizer=read_dataset(data).tokenizer)
    print(result.summary, file=out)
    print(closing_report(result.better, verdict), file=out)
    if record is not None:
        record["gate"] = {"old": dataclasses.asdict(result.old), "new": dataclasses.asdict(result.new),
                          "better": result.better, "summary": result.summary,
                          "verdict": {**dataclasses.asdict(verdict), "beyond_noise": verdict.beyond_noise}}
        _write_json(folder / REPORT, record)
    if not result.better:
        print(f"kept your current model; the new one is at {candidate}", file=out)
        return 0
    install_model(candidate, opts.out, folder / "loss.png")
    print(f"installed as {opts.out!r} ({named_model_path(opts.out)}); the previous one is kept for "
          f"codeassist train --rollback --out {opts.out}", file=out)
    return 0


def _write_json(path: Path, data: dict[str, Any]) -> None:
    import json

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def _current_model(opts: FinetuneOptions) -> Path | None:
    """What the new model must beat: the user's model of that name, else the model it started
    from, else (from scratch) the embedded default; None when there is none."""
    if named_model_path(opts.out).exists():
        return named_model_path(opts.out)
    for name in ((opts.init_from,) if opts.init_from != "scratch" else ()) + ("default",):
        try:
            path, _ = resolve_model(name)
        except ModelFileError:
            continue
        if path.is_file() or path.is_dir():  # a Hugging Face folder too
            return path
    return None


def install_model(candidate: Path, name: str, curve: Path | None = None) -> Path:
    """Make `candidate` the user's model `name`, keeping the replaced one as `name`.previous."""
    target = named_model_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        os.replace(target, named_model_path(f"{name}.previous"))
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(candidate, tmp)
    os.replace(tmp, target)
    if curve is not None:  # the loss chart and its metrics (loss.png, loss.jsonl), as NAME.loss.png/.jsonl
        for made in (curve, curve.with_suffix(".jsonl")):
            if made.exists():
                shutil.copyfile(made, target.with_suffix(".loss" + made.suffix))
    return target


def rollback(name: str) -> str:
    target, previous = named_model_path(name), named_model_path(f"{name}.previous")
    if not previous.exists():
        raise TrainError(f"there is no previous model of {name!r} to roll back to")
    tmp = target.with_name(f".{target.name}.swap")
    os.replace(previous, tmp)
    if target.exists():
        os.replace(target, previous)
    os.replace(tmp, target)
    return f"{name!r} is the previous model again; run --rollback once more to undo"
