"""The side-by-side report: fp32, bf16, int8, int4 and int4-GPTQ of one model, measured in one run.

Each variant is written to a file, loaded back with load_model (so the numbers are those of the
files users get) and measured: size on disk, held-out perplexity, line exact match (the gate's
line cases, each file through the editor's pipeline as the editor loads it: codeassist.evaluation),
prefill ms and decode tokens/s. A second table times the same schemes on a bigger shape with
random weights (speed does not depend on the values), by default GPT-2 small (124M).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from codeassist.evaluation.exact import exact_match
from codeassist.evaluation.lines import HeldOutFile, line_samples
from codeassist.evaluation.loss import perplexity
from codeassist.model.checkpoint import load_model, save_model
from codeassist.model.config import get_preset
from codeassist.model.engine import Engine
from codeassist.model.gpt import GPT
from codeassist.quantization.calibration import Document, calibration_samples, stdlib_splits, token_stream
from codeassist.quantization.evaluate import measure_speed
from codeassist.quantization.gptq import GPTQConfig
from codeassist.quantization.quantize import quantize

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportConfig:
    group_size: int = 64
    head: str = "int8"  # the tied embedding / head of the quantized variants
    eval_tokens: int = 32 * 1024  # held-out tokens for perplexity
    em_samples: int = 60  # line-completion cases
    calib_samples: int = 128
    calib_seq_len: int = 512
    prompt_tokens: int = 512
    decode_tokens: int = 64
    repeats: int = 3  # timing rounds (variants take turns; each keeps its best)
    compare_float_head: bool = True  # add an int8 variant whose tied embedding / head stays fp32
    speed_shape: str | None = "gpt2"  # preset timed with random weights; None skips that table
    seed: int = 0


@dataclass(frozen=True)
class Row:
    name: str
    size_bytes: int
    prefill_ms: float
    decode_tps: float
    perplexity: float | None = None
    exact_match: float | None = None
    seconds: float = 0.0  # how long making this variant took (GPTQ calibration, mostly)
    prefill_cpu_ms: float = 0.0
    decode_cpu_tps: float = 0.0


Progress = Callable[[str], None]


def _variant_files(model: GPT, cfg: ReportConfig, folder: Path, calib: torch.Tensor | None,
                   progress: Progress) -> list[tuple[str, Path, torch.dtype, float]]:
    """(name, file, engine dtype, seconds to make) for each variant, written into `folder`."""
    out: list[tuple[str, Path, torch.dtype, float]] = []
    save_model(model, folder / "fp32.safetensors", dtype=torch.float32)
    out.append(("fp32", folder / "fp32.safetensors", torch.float32, 0.0))
    save_model(model, folder / "bf16.safetensors", dtype=torch.bfloat16)
    out.append(("bf16", folder / "bf16.safetensors", torch.bfloat16, 0.0))
    methods = [("int8", "int8", cfg.head), (f"int4-g{cfg.group_size}", "int4", cfg.head)]
    if calib is not None:
        methods.append((f"int4-gptq-g{cfg.group_size}", "gptq", cfg.head))
    if cfg.compare_float_head and cfg.head != "none":
        methods.append(("int8-fp32head", "int8", "none"))  # what quantizing the tied head costs
    for name, method, head in methods:
        progress(f"quantizing {name}")
        t0 = time.perf_counter()
        q = quantize(model, method, cfg.group_size, head, calibration=calib,
                     gptq=GPTQConfig(group_size=cfg.group_size), progress=progress)
        q.save(model, folder / f"{name}.safetensors")
        out.append((name, folder / f"{name}.safetensors", torch.float32, time.perf_counter() - t0))
    return out


def quality_report(model: GPT, cfg: ReportConfig, calib_docs: list[Document] | None = None,
                   progress: Progress = log.info) -> list[Row]:
    """Every variant of a trained model, with perplexity and exact match on held-out stdlib files."""
    model = model.float().eval()
    train, val = stdlib_splits()
    eval_ids = token_stream(val, cfg.eval_tokens + 1, fim_rate=0.0, seed=cfg.seed, shuffle=False)
    samples = line_samples([HeldOutFile(d.path, "python", d.text) for d in val], cfg.em_samples, cfg.seed)
    docs = calib_docs if calib_docs is not None else train
    calib = calibration_samples(docs, cfg.calib_samples, min(cfg.calib_seq_len, model.config.block_size),
                                seed=cfg.seed)
    rows: list[Row] = []
    engines: list[Engine] = []
    with tempfile.TemporaryDirectory(prefix="codeassist-quant-") as tmp:
        for name, path, dtype, seconds in _variant_files(model, cfg, Path(tmp), calib, progress):
            progress(f"measuring {name}")
            loaded, _ = load_model(path)
            engine = Engine(loaded, torch.device("cpu"), dtype)
            ppl = perplexity(engine.model, eval_ids, model.config.block_size)
            em = exact_match(path, samples)  # the file through the editor's pipeline, loaded as it loads it
            rows.append(Row(name, path.stat().st_size, 0.0, 0.0, ppl, em, seconds))
            engines.append(engine)
            progress(f"{name}: perplexity {ppl:.3f}, exact match {100 * em:.1f}%")
    progress("timing all variants in turns")
    speeds = measure_speed(engines, eval_ids, cfg.prompt_tokens, cfg.decode_tokens, cfg.repeats)
    return [replace(r, prefill_ms=s.prefill_ms, decode_tps=s.decode_tps, prefill_cpu_ms=s.prefill_cpu_ms,
                    decode_cpu_tps=s.decode_cpu_tps) for r, s in zip(rows, speeds, strict=True)]


def speed_report(cfg: ReportConfig, progress: Progress = log.info) -> list[Row]:
    """The same schemes on `cfg.speed_shape` with random weights: size and speed only."""
    assert cfg.speed_shape is not None
    model = GPT(get_preset(cfg.speed_shape))
    model.init_weights(cfg.seed)
    model.eval()
    ids = torch.randint(0, 50000, (4096,), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    rows: list[Row] = []
    engines: list[Engine] = []
    with tempfile.TemporaryDirectory(prefix="codeassist-quant-") as tmp:
        for name, path, dtype, seconds in _variant_files(model, replace(cfg, compare_float_head=False), Path(tmp),
                                                         None, progress):
            loaded, _ = load_model(path)
            engines.append(Engine(loaded, torch.device("cpu"), dtype))
            rows.append(Row(name, path.stat().st_size, 0.0, 0.0, seconds=seconds))
    del model
    progress(f"timing all variants in turns ({cfg.speed_shape} shape)")
    speeds = measure_speed(engines, ids, cfg.prompt_tokens, cfg.decode_tokens, cfg.repeats)
    return [replace(r, prefill_ms=s.prefill_ms, decode_tps=s.decode_tps, prefill_cpu_ms=s.prefill_cpu_ms,
                    decode_cpu_tps=s.decode_cpu_tps) for r, s in zip(rows, speeds, strict=True)]


HEADER = (f"{'variant':<15}{'size MB':>8}{'x fp32':>7}{'perplexity':>11}{'Δ ppl':>8}{'exact':>7}"
          f"{'prefill ms':>11}{'decode tok/s':>13}{'x fp32':>7}{'cpu: prefill ms':>16}{'tok/s':>7}{'x fp32':>7}")


def format_row(row: Row, base: Row) -> str:
    size = row.size_bytes / 1e6
    ppl = f"{row.perplexity:11.3f}" if row.perplexity is not None else f"{'-':>11}"
    dppl = (f"{100 * (row.perplexity / base.perplexity - 1):+7.2f}%"
            if row.perplexity is not None and base.perplexity else f"{'-':>8}")
    em = f"{100 * row.exact_match:6.1f}%" if row.exact_match is not None else f"{'-':>7}"
    return (f"{row.name:<15}{size:8.1f}{row.size_bytes / base.size_bytes:7.3f}{ppl}{dppl}{em}"
            f"{row.prefill_ms:11.1f}{row.decode_tps:13.1f}{row.decode_tps / max(1e-9, base.decode_tps):7.2f}"
            f"{row.prefill_cpu_ms:16.1f}{row.decode_cpu_tps:7.1f}"
            f"{row.decode_cpu_tps / max(1e-9, base.decode_cpu_tps):7.2f}")


def format_table(title: str, rows: list[Row]) -> str:
    lines = [title, HEADER, *(format_row(r, rows[0]) for r in rows)]
    return "\n".join(lines)
