"""`codeassist train PATH...`: collect, tokenize, train (one process or torchrun DDP), gate, install.

Everything of one run lives in <data dir>/runs/<name>/: data/ (shards, manifest), the training
checkpoint (state.safetensors, the last few in checkpoints/), the candidate model and its loss
curve. The user's model is <data dir>/models/<name>.safetensors; the one it replaces is kept as
<name>.previous.safetensors, and `--rollback` swaps them back.

Any family trains: the init model (ours, a model file of an open family, a Hugging Face folder or
hf:ORG/NAME) brings its tokenizer, the shards are written in it, and the model file written
carries it. Above 100M parameters `--method auto` trains LoRA adapters (training/lora.py) and
writes the merged weights, an ordinary model file of the same shape.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

import torch

from codeassist.model.checkpoint import ModelFileError
from codeassist.model.config import get_preset
from codeassist.model.errors import UserFacingError
from codeassist.model.gpt import GPT
from codeassist.model.store import data_dir, named_model_path, resolve_model
from codeassist.training import ddp
from codeassist.training.collect import collect, format_report
from codeassist.training.dataset import build_dataset, read_dataset, read_val_files
from codeassist.training.fim import FIM_RATE
from codeassist.training.loop import TrainConfig, build_model, train
from codeassist.training.plot import save_loss_curve
from codeassist.training.precision import ProbeShape
from codeassist.training.shards import load_split

if TYPE_CHECKING:
    from codeassist.model.tokenization import Tokenizer

log = logging.getLogger(__name__)


class TrainError(UserFacingError):
    """Bad input or state for a training run; str() is one sentence for the user."""


@dataclass(frozen=True)
class FinetuneOptions:
    paths: tuple[str, ...]
    out: str = "mine"
    init_from: str = "default"  # default | scratch | a model name or path
    preset: str = "default"  # the shape of a model trained from scratch
    time_budget_s: float | None = None
    max_iters: int | None = None  # given: exactly this many steps, whatever max_epochs says
    max_epochs: float = 4.0  # passes over the written training split (all its FIM passes); see _train_config
    resume: bool = False
    yes: bool = False
    languages: tuple[str, ...] = ()
    batch_size: int = 4  # sequences per optimizer step, over all processes
    micro_batch: int | None = None  # sequences per forward pass in one process; None: up to 4
    seq_len: int = 1024  # whole FIM samples (~3,000 characters) and the editor's whole prompt (896)
    lr: float | None = None  # None: see default_lr
    precision: str = "auto"  # auto: bf16 on CUDA where supported; on a CPU only where measured faster (precision.py)
    eval_interval: int = 100
    ckpt_interval: int = 50
    keep_checkpoints: int = 3
    gate_lines: int = 300  # one line is a third of a point: 100 left the gate's figure within noise
    val_fraction: float = 0.1
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    progress: bool = True
    # levers against a small project's memorisation (issue 20); off until the benchmark shows a gain
    replay: float = 0.0  # share of each step's sequences that is general code (the standard library)
    early_stop: int = 0  # stop after this many checks (every eval_interval steps) without a new best; 0: off
    dropout: float = 0.0
    fim_rate: float = FIM_RATE
    warmup_iters: int | None = None  # None: a tenth of the steps, at most 50
    method: str = "auto"  # auto (LoRA above 100M parameters) | lora | full
    lora_rank: int = 16
    parallel: str = "ddp"  # under torchrun with several processes: ddp | fsdp


def run_dir(name: str) -> Path:
    return data_dir() / "runs" / name


def load_init_model(init_from: str, preset: str, seed: int) -> tuple[GPT, str, Tokenizer]:
    """(a float model to train, a description of where it came from, its tokenizer).

    Ours from scratch and for GPT-2-family files; a Hugging Face folder's tokenizer.json for a
    folder or hf:ORG/NAME; the tokenizer a model file of an open family carries."""
    from codeassist.model.engine import load_any
    from codeassist.model.tokenization import codeassist_tokenizer

    if init_from == "scratch":
        return build_model(get_preset(preset), seed), f"scratch ({preset})", codeassist_tokenizer()
    model, info, name, tokenizer = load_any(init_from, "cpu")
    if info is not None and info.scheme != "none":
        from codeassist.model.quantized import dequantize_model  # only quantized models need it

        model = dequantize_model(model)
    # any family (load_any gives a CausalLM); the loop is typed for GPT and trains them through
    # the interface they share (loss, config, parameters)
    return cast(GPT, model.float().train()), name, tokenizer


def tokenizer_meta(tokenizer: Tokenizer) -> dict[str, str] | None:
    """What the trained model file must carry of its tokenizer; None for ours (the default)."""
    from codeassist.model.tokenizer import TOKENIZER_NAME

    meta = tokenizer.to_metadata()
    return None if meta == {"tokenizer": TOKENIZER_NAME} else meta


def _confirm_tty(question: str) -> bool:
    if not sys.stdin.isatty():
        raise TrainError("no terminal to confirm on; pass --yes to train without asking")
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def use_bf16(precision: str, device: torch.device, shape: ProbeShape | None = None) -> bool:
    """`fp32` and `bf16` as asked; `auto` through training/precision.py (CUDA: bf16 where
    supported; CPU: measured once at this shape, bf16 only when clearly faster)."""
    from codeassist.training import precision as prec

    if precision not in prec.PRECISIONS:
        raise TrainError(f"unknown precision {precision!r}; use auto, fp32 or bf16")
    return prec.use_bf16(precision, device, shape or prec.ProbeShape(n_embd=768, vocab_size=50304))


def default_lr(model: GPT, scratch: bool) -> float:
    """1e-3 from scratch; fine-tuning scales it by 256 / width (1e-3 for the default model's 256,
    3.3e-4 for GPT-2's 768). On anyio, 15 minutes from the default model: 1e-3 reached a held-out
    loss of 2.80 where 3e-4 reached 2.89."""
    return 1e-3 if scratch else 1e-3 * 256 / model.config.n_embd


def epoch_iters(epochs: float, train_tokens: int, tokens_per_step: int) -> int:
    """Steps for `epochs` passes over the training split, the end of a run on a small project.

    Measured from the default model on 2 CPU cores (model/MODEL_CARD.md): the held-out loss seen
    during training is lowest early (anyio: pass 1.5; starlette: pass 0.7, its first evaluation),
    but exact match keeps rising after it (anyio: +10 points at 2.1 passes, +12 at 3.5). Left to
    run 7.1 passes, starlette ended with a held-out loss above the untrained model's and the gate
    refused it; stopped at 4 passes, it was accepted. So 4 passes by default. At ~1,550 tokens/s
    (2 cores), a project over ~0.3 MB does not reach them in 30 minutes: the time budget ends its run.
    """
    return max(1, math.ceil(epochs * train_tokens / tokens_per_step))


def _train_config(opts: FinetuneOptions, model: GPT, train_tokens: int, world: int,
                  device: torch.device) -> TrainConfig:
    seq = min(opts.seq_len, model.config.block_size, train_tokens - 2)
    if seq < 16:
        raise TrainError(f"only {train_tokens} training tokens were collected; that is too little code to train on")
    micro = opts.micro_batch or max(1, min(4, opts.batch_size // world))
    if opts.batch_size % (micro * world):
        raise TrainError(f"--batch-size {opts.batch_size} must be a multiple of --micro-batch {micro} "
                         f"times the {world} processes")
    lr = opts.lr if opts.lr is not None else default_lr(model, opts.init_from == "scratch")
    max_iters = opts.max_iters or epoch_iters(opts.max_epochs, train_tokens, opts.batch_size * seq)
    warmup = opts.warmup_iters if opts.warmup_iters is not None else min(50, max(1, max_iters // 10))
    return TrainConfig(batch_size=micro, seq_len=seq, grad_accum=opts.batch_size // micro,
                       max_iters=max_iters, time_budget_s=opts.time_budget_s, lr=lr, min_lr=lr / 10,
                       warmup_iters=max(1, warmup),
                       eval_interval=opts.eval_interval, eval_batches=4, ckpt_interval=opts.ckpt_interval,
                       seed=opts.seed,
                       autocast_bf16=use_bf16(opts.precision, device,
                                              ProbeShape(n_embd=model.config.n_embd,
                                                         vocab_size=model.config.vocab_size, rows=micro * seq)),
                       replay_ratio=opts.replay, early_stop_patience=opts.early_stop)


def set_dropout(model: GPT, p: float) -> None:
    """Train with dropout `p` (the attention's and every Dropout module's); the config records it,
    so a resume checks it like the rest of the model's shape."""
    from codeassist.model.gpt import CausalSelfAttention

    if getattr(model.config, "dropout", 0.0) == p:
        return  # as it was trained (other families' configs need not have the field)
    model.config = dataclasses.replace(model.config, dropout=p)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
        elif isinstance(m, CausalSelfAttention):
            m.dropout = p


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


def _apply_method(model: GPT, opts: FinetuneOptions) -> str:
    """LoRA adapters on `model` when --method asks (auto: above 100M parameters); the phrase
    the start line ends with."""
    from codeassist.training.lora import apply_lora, count_parameters, wants_lora

    try:
        lora = wants_lora(model, opts.method)
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    if not lora:
        return ""
    apply_lora(model, rank=opts.lora_rank, seed=opts.seed)
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return (f", LoRA rank {opts.lora_rank} ({trained:,} of {count_parameters(model):,} parameters train; "
            "the merged model is written)")


def _check_resume_method(state_path: Path, model: GPT) -> None:
    """Refuse a resume whose checkpoint was trained with LoRA when this run trains fully, or the
    other way round, or with adapters of another rank."""
    from safetensors import safe_open

    from codeassist.training.lora import lora_layers

    try:
        with safe_open(str(state_path), framework="pt") as f:
            saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.endswith(".lora_a")}  # noqa: SIM118
    except Exception:  # a damaged checkpoint is the loop's to report, in its own words
        return
    ours = {f"model.{name}.lora_a": tuple(layer.lora_a.shape) for name, layer in lora_layers(model)}
    if saved != ours:
        was = f"LoRA rank {next(iter(saved.values()))[0]}" if saved else "full fine-tuning"
        raise TrainError(f"cannot resume: the run was trained with {was}; pass the same --method and --lora-rank")


def _check_resume_tokenizer(data: Path, tokenizer: Tokenizer) -> None:
    """Refuse a resume whose shards were written in another tokenizer than the init model's."""
    from codeassist.training.dataset import tokenizer_identity
    from codeassist.training.shards import read_manifest

    try:
        written = str(read_manifest(data).get("tokenizer", ""))
    except (OSError, ValueError):
        return  # no data yet: it is written now, and the checkpoint's data id decides
    if written and written != tokenizer_identity(tokenizer):
        raise TrainError(f"cannot resume: the run's data was tokenized for tokenizer {written!r}, and "
                         f"--init-from gives {tokenizer_identity(tokenizer)!r}")


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
