"""`codeassist quantize MODEL --method int8|int4|gptq ...` and `codeassist quantize --report MODEL`.

Top-level imports stay light (argparse only): torch and the model load inside run().
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codeassist.model.errors import UserError

if TYPE_CHECKING:
    from codeassist.model.causal_lm import CausalLM
    from codeassist.model.gpt import GPT

METHOD_CHOICES = ("int8", "int4", "gptq")
GROUP_CHOICES = (32, 64, 128)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the float model to quantize: a name (default, gpt2, a saved name) or a path")
    p.add_argument("--method", choices=METHOD_CHOICES,
                   help="int8 (per-channel), int4 (group-wise, round to nearest) or gptq (int4, calibrated)")
    p.add_argument("--group-size", type=int, default=64, choices=GROUP_CHOICES, help="int4 group size")
    p.add_argument("--head", choices=("int8", "int4", "none"), default="int8",
                   help="the tied embedding / output head (default int8: near lossless, 4x smaller than fp32)")
    p.add_argument("--calibration", type=Path, nargs="+", metavar="PATH",
                   help="GPTQ calibration code: files or folders (default: the Python standard library)")
    p.add_argument("--calib-samples", type=int, default=128, help="GPTQ calibration sequences")
    p.add_argument("--calib-seq-len", type=int, default=512, help="tokens per calibration sequence")
    p.add_argument("--out", help="a model name (saved in the models folder) or a .safetensors path "
                                 "(default: MODEL-METHOD in the models folder)")
    p.add_argument("--report", action="store_true",
                   help="instead of writing a file, compare fp32, bf16, int8, int4 and int4-GPTQ of MODEL")
    p.add_argument("--eval-tokens", type=int, default=32 * 1024, help="report: held-out tokens for perplexity")
    p.add_argument("--em-samples", type=int, default=60, help="report: line-completion cases")
    p.add_argument("--speed-shape", default="gpt2",
                   help="report: also time this preset with random weights (gpt2 = 124M; 'none' skips it)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="report: print the rows as JSON too")


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.report:
        return _report(args)
    if not args.method:
        raise UserError("say how to quantize with --method int8, int4 or gptq (or ask for --report)")
    if args.calibration and args.method != "gptq":
        raise UserError("--calibration is used by --method gptq only")
    model, name, provenance, tokenizer = _load_float(args.model)
    from codeassist.model.gpt import GPT

    if args.method == "gptq" and not isinstance(model, GPT):
        raise UserError("--method gptq quantizes GPT-2-family models only; use --method int4 (round to "
                        "nearest) or int8 for this model")
    out = _out_path(args.out, f"{name}-{args.method}")
    calibration = _calibration(args, model) if isinstance(model, GPT) and args.method == "gptq" else None

    from codeassist.quantization.quantize import quantize

    try:
        q = quantize(model, args.method, args.group_size, args.head, calibration=calibration,
                     progress=lambda msg: print(msg, file=sys.stderr))
    except ValueError as exc:  # a width the int4 group size does not divide
        raise UserError(str(exc)) from None
    q.save(model, out, provenance={**provenance, "quantized_from": str(args.model)}, tokenizer=tokenizer)
    print(out)
    return 0


def _load_float(model_arg: str) -> tuple[CausalLM, str, dict[str, Any], dict[str, str] | None]:
    """The float model, its name, provenance, and its tokenizer's metadata (None: ours)."""
    import torch

    from codeassist.model.checkpoint import load_model
    from codeassist.model.quantized import dequantize_model, is_quantized
    from codeassist.model.store import resolve_model

    path, name = resolve_model(model_arg)
    if path.is_dir():
        from codeassist.model.families import family_of, load_pretrained

        model, _ = load_pretrained(path, dtype=torch.float32)
        return model.eval(), name, {"data": f"Hugging Face {name}"}, _folder_tokenizer(path, family_of(path))
    model, info = load_model(path)
    if is_quantized(model):
        print(f"note: {model_arg} is already quantized ({info.scheme}); quantizing its dequantized weights",
              file=sys.stderr)
        model = dequantize_model(model)
    return model.float().eval(), name, dict(info.provenance), info.tokenizer_meta


def _folder_tokenizer(path: Path, family: str) -> dict[str, str] | None:
    """The tokenizer.json of a Hugging Face folder, as model file metadata (gpt2 folders use ours)."""
    if family == "gpt2":
        return None
    from codeassist.model.hf_tokenizer import HFTokenizer
    from codeassist.model.tokenization import TokenizerFileError

    try:
        return HFTokenizer.from_folder(path).to_metadata()
    except TokenizerFileError as exc:
        raise UserError(str(exc)) from None


def _out_path(out: str | None, default_name: str) -> Path:
    from codeassist.model.store import named_model_path

    if out is None:
        return named_model_path(default_name)
    if os.sep in out or out.endswith(".safetensors"):
        path = Path(out).expanduser()
        if path.is_dir():
            raise UserError(f"--out {out} is a folder; give a file name ending in .safetensors")
        return path
    try:
        return named_model_path(out)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _calibration(args: argparse.Namespace, model: GPT) -> Any:
    from codeassist.quantization.calibration import calibration_samples, collect_documents, stdlib_split

    if args.calibration:
        missing = [str(p) for p in args.calibration if not p.exists()]
        if missing:
            raise UserError(f"calibration path not found: {missing[0]}")
        docs = collect_documents(args.calibration)
        if not docs:
            raise UserError("no readable source files were found under the --calibration paths")
    else:
        docs = stdlib_split(validation=False)
    if args.calib_samples < 1 or args.calib_seq_len < 16:
        raise UserError("--calib-samples must be at least 1 and --calib-seq-len at least 16")
    return calibration_samples(docs, args.calib_samples, min(args.calib_seq_len, model.config.block_size))


def _report(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    import torch

    from codeassist.model.gpt import GPT
    from codeassist.quantization.calibration import collect_documents
    from codeassist.quantization.report import ReportConfig, format_table, quality_report, speed_report

    model, name, _, _ = _load_float(args.model)
    if not isinstance(model, GPT):
        raise UserError("--report compares GPT-2-family models only (it measures with our tokenizer)")
    shape = None if args.speed_shape == "none" else args.speed_shape
    cfg = ReportConfig(group_size=args.group_size, head=args.head, eval_tokens=args.eval_tokens,
                       em_samples=args.em_samples, calib_samples=args.calib_samples,
                       calib_seq_len=args.calib_seq_len, speed_shape=shape)
    if shape:
        from codeassist.model.config import get_preset

        try:
            get_preset(shape)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    docs = collect_documents(args.calibration) if args.calibration else None

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rows = quality_report(model, cfg, docs, progress)
    threads = torch.get_num_threads()
    print(format_table(f"{name}: held-out stdlib perplexity ({cfg.eval_tokens} tokens), exact match on "
                       f"{cfg.em_samples} lines, {threads} thread(s)", rows))
    speed_rows = []
    if shape:
        speed_rows = speed_report(cfg, progress)
        print()
        print(format_table(f"{shape} shape, random weights: speed only, {threads} thread(s)", speed_rows))
    if args.json:
        print(json.dumps({"model": [asdict(r) for r in rows], "speed": [asdict(r) for r in speed_rows]}))
    return 0
