"""What a `codeassist train` run settles from its options before the first step: the model it
trains (the init model, its tokenizer, dropout, LoRA adapters), whether a resume matches the run
it continues, and the loop's settings (steps, learning rate, batch split, precision).

finetune.py runs the command and owns its side effects: the terminal, the run folder, torchrun's
processes, the gate and the installed model. What is here leaves those alone: each decision is a
function of the options, the model, the data's size or what the run folder already holds, so a
test checks it without running a training. `FinetuneOptions` and `TrainError` are defined here
because these decisions read the one and raise the other; finetune.py imports both, and they stay
importable from there.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from codeassist.model.config import get_preset
from codeassist.model.errors import UserFacingError
from codeassist.model.gpt import GPT
from codeassist.training.fim import FIM_RATE
from codeassist.training.loop import TrainConfig, build_model
from codeassist.training.precision import ProbeShape

if TYPE_CHECKING:
    from codeassist.model.tokenization import Tokenizer


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
