"""Record every greedy output a change could alter, and compare two recordings.

Issue 17 merges three decode loops into one decode step. Its acceptance: every greedy output is
unchanged, except where a stop now fires during decoding instead of after it. This script is the
proof. `record` runs held-out lines of the standard library (training.stdlib's validation split,
as benchmarks/bench_engine.py takes them) through each path that decodes:

- engine/{int8,fp32}/{plain,lookup}/{line,block}: `Engine.generate` with the shipped default
  model (int8) and its dequantized fp32 copy, without and with prompt-lookup speculation, with
  LINE ("\\n") and BLOCK (the pipeline's Python block stops) stop strings; every other case
  forces a prefix (the start of the line: token healing);
- scheduler/{line,block}: the team server's continuous-batching scheduler in-process, all cases
  submitted at once into 8 rows, so rows join and leave;
- pipeline/{line,block}: the language server's pipeline on the gate's line cases
  (`multiline` never, the gate's settings; and always), the text the editor would show.

`compare BASE NEW` prints every difference by path and exits 1 unless each is explained by a
stop firing earlier: the new output a proper prefix of the old one, ended by a stop.

It uses only calls that were public before issue 17 and after, so one file records both:

    git worktree add /tmp/base17 bae1287
    cd /tmp && PYTHONPATH=/tmp/base17 python /work/main/benchmarks/greedy_outputs.py record base.json
    cd /work/main && python benchmarks/greedy_outputs.py record new.json
    python benchmarks/greedy_outputs.py compare base.json new.json

(`record --only engine,scheduler` and `--only pipeline` may be run apart; `compare` takes both.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

LINE_STOPS = ("\n",)
BLOCK_STOPS = ("\n\n\n", "\ndef ", "\nclass ", "\nif __name__", "\n@")  # lsp/pipeline.py's Python stops
MAX_TOKENS = {"line": 24, "block": 48}
PROMPT_TOKENS = 384  # each engine prompt: the tokens before a line start, nearest the cursor
MAX_BATCH = 8

Record = dict[str, dict[str, dict[str, Any]]]  # path -> case key -> {"text", "reason", ...}


@dataclass(frozen=True)
class Case:
    key: str  # "file.py:offset", stable across runs
    ids: tuple[int, ...]  # the prompt, ending at a line start
    forced: bytes  # the start of the line, or b""


def heldout_cases(n: int) -> list[Case]:
    """`n` cases from the held-out standard library files, a few per file, seeded by path."""
    from codeassist.model.tokenizer import encode
    from codeassist.training.stdlib import split_documents, stdlib_documents

    _, held_out = split_documents(stdlib_documents())
    cases: list[Case] = []
    for doc in sorted(held_out, key=lambda d: d.path):
        starts = [i + 1 for i, ch in enumerate(doc.text) if ch == "\n"][20:-2]
        seed = zlib.crc32(doc.path.encode())
        for start in starts[seed % 97::max(1, len(starts) // 3)][:3]:
            line = doc.text[start:doc.text.find("\n", start)]
            if len(line.strip()) < 4:
                continue
            body = len(line) - len(line.lstrip())
            forced = line[:body + 2].encode() if len(cases) % 2 else b""  # heal into the line's first word
            ids = tuple(encode(doc.text[max(0, start - 4 * PROMPT_TOKENS):start])[-PROMPT_TOKENS:])
            cases.append(Case(f"{doc.path}:{start}", ids, forced))
            if len(cases) == n:
                return cases
    return cases


def record_engine(cases: list[Case], out: Record) -> None:
    from codeassist.model.engine import Engine, GenerationRequest, StopRules
    from codeassist.model.quantized import dequantize_model
    from codeassist.model.speculative import SpeculationParams

    int8 = Engine.load("default", device="cpu")
    fp32 = Engine(dequantize_model(int8.model), torch.device("cpu"), torch.float32, tokenizer=int8.tokenizer)
    spec = {"plain": SpeculationParams(), "lookup": SpeculationParams(method="prompt_lookup")}
    stops = {"line": LINE_STOPS, "block": BLOCK_STOPS}
    for model_name, engine in (("int8", int8), ("fp32", fp32)):
        for spec_name, params in spec.items():
            for mode, strings in stops.items():
                path = f"engine/{model_name}/{spec_name}/{mode}"
                t0 = time.perf_counter()
                rows = out.setdefault(path, {})
                for c in cases:
                    res = engine.generate(GenerationRequest(
                        prompt=c.ids, forced_prefix=c.forced, speculation=params,
                        stop=StopRules(max_new_tokens=MAX_TOKENS[mode], stop_strings=strings)))
                    rows[c.key] = {"text": res.text, "reason": res.stop_reason, "tokens": len(res.tokens)}
                _progress(path, len(cases), t0)
    del int8, fp32


def record_scheduler(cases: list[Case], out: Record) -> None:
    from codeassist.model.engine import Engine
    from codeassist.remote.metrics import ServerMetrics
    from codeassist.remote.scheduler import Delta, Failed, Finished, Job, Scheduler

    engine = Engine.load("default", device="cpu")  # a model of its own: the scheduler owns its cache
    for mode, strings in (("line", LINE_STOPS), ("block", BLOCK_STOPS)):
        path = f"scheduler/{mode}"
        t0 = time.perf_counter()
        scheduler = Scheduler(ServerMetrics(), max_batch=MAX_BATCH, max_queue=len(cases) + 1)
        scheduler.start(engine.model, engine.device, engine.dtype, engine.tokenizer, engine.context_tokens)

        async def run(scheduler: Scheduler = scheduler, strings: tuple[str, ...] = strings,
                      mode: str = mode) -> list[tuple[str, str]]:
            jobs = [Job(prompt=c.ids, max_new_tokens=MAX_TOKENS[mode], forced_prefix=c.forced, stop=strings)
                    for c in cases]
            handle = scheduler.submit(jobs)
            texts = [""] * len(jobs)
            reasons = [""] * len(jobs)
            while not all(reasons):
                i, event = await asyncio.wait_for(handle.next(), 600)
                if isinstance(event, Delta):
                    texts[i] += event.text
                elif isinstance(event, Finished):
                    reasons[i] = event.reason
                elif isinstance(event, Failed):
                    raise RuntimeError(f"the scheduler failed a case: {event.message}")
            return list(zip(texts, reasons, strict=True))

        try:
            results = asyncio.run(run())
        finally:
            scheduler.stop()
        out[path] = {c.key: {"text": t, "reason": r} for c, (t, r) in zip(cases, results, strict=True)}
        _progress(path, len(cases), t0)


def record_pipeline(n: int, out: Record) -> None:
    """The gate's line cases through the editor's pipeline (training/gate.py's `_line_hits`)."""
    from codeassist.lsp.backends import LocalBackend
    from codeassist.lsp.context import build_context
    from codeassist.lsp.pipeline import Pipeline
    from codeassist.lsp.settings import Settings

    samples = gate_samples(n)
    for mode, multiline in (("line", "never"), ("block", "always")):
        path = f"pipeline/{mode}"
        t0 = time.perf_counter()
        backend = LocalBackend(model="default", device="cpu", threads=torch.get_num_threads())
        backend.start()
        if not backend.wait_ready(timeout=600):
            raise RuntimeError(f"the default model did not load: {backend.status().reason}")
        settings = Settings(multiline=multiline, cache=False, debounce_ms=0, temperature=0.0,
                            time_budget_ms=30000)

        async def run(backend: LocalBackend = backend, settings: Settings = settings) -> dict[str, dict[str, Any]]:
            pipe = Pipeline(backend, settings)
            rows: dict[str, dict[str, Any]] = {}
            try:
                for s in samples:
                    ctx = build_context(f"file:///{s.path}", s.language, s.document, s.offset)
                    result = await pipe.complete(ctx, invoked=True)
                    rows[f"{s.path}:{s.offset}"] = {"text": result.text, "reason": result.reason}
            finally:
                await backend.aclose()
            return rows

        out[path] = asyncio.run(run())
        _progress(path, len(samples), t0)


def gate_samples(n: int) -> list[Any]:
    """The gate's line cases on the held-out standard library files."""
    from codeassist.training.collect import SourceFile
    from codeassist.training.stdlib import split_documents, stdlib_documents

    try:  # issue 17 moved the line cases into codeassist.evaluation; before, they were the gate's
        from codeassist.evaluation import line_samples
    except ImportError:
        from codeassist.training.gate import line_samples  # type: ignore[attr-defined]
    _, held_out = split_documents(stdlib_documents())
    files = [SourceFile(path=d.path, language="python", text=d.text) for d in held_out]
    samples: list[Any] = line_samples(files, n)
    return samples


def _progress(path: str, count: int, t0: float) -> None:
    print(f"{path}: {count} cases in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def record(out_path: Path, n: int, only: tuple[str, ...]) -> None:
    import codeassist.model.engine as engine_module

    torch.manual_seed(0)
    out: Record = {}
    cases = heldout_cases(n)
    if "engine" in only:
        record_engine(cases, out)
    if "scheduler" in only:
        record_scheduler(cases, out)
    if "pipeline" in only:
        record_pipeline(n, out)
    meta = {"engine_file": engine_module.__file__, "cases": len(cases), "torch": torch.__version__}
    out_path.write_text(json.dumps({"meta": meta, "paths": out}, indent=1, ensure_ascii=False))
    print(f"wrote {out_path} ({sum(len(v) for v in out.values())} outputs, code from {meta['engine_file']})",
          file=sys.stderr)


# -- compare ---------------------------------------------------------------------------------------

def is_earlier_stop(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """The new output is a proper prefix of the old one and a stop rule ended it: a stop that now
    fires while decoding cut what used to run on (and be trimmed, or shown) afterwards."""
    stopped = new.get("reason") in ("stop", None)  # the pipeline's reason is None for a suggestion
    return stopped and len(new["text"]) < len(old["text"]) and old["text"].startswith(new["text"])


def compare(base: dict[str, Any], new: dict[str, Any], show: Callable[[str], None] = print) -> int:
    """Print the differences by path; the number that no earlier stop explains."""
    unexplained = 0
    old_paths, new_paths = base["paths"], new["paths"]
    for path in sorted(set(old_paths) | set(new_paths)):
        if path not in new_paths or path not in old_paths:
            show(f"{path}: only in {'the base' if path in old_paths else 'the new recording'}")
            unexplained += 1
            continue
        old_rows, new_rows = old_paths[path], new_paths[path]
        missing = sorted(set(old_rows) ^ set(new_rows))
        same = explained = reasons = 0
        lines: list[str] = []
        for key in sorted(set(old_rows) & set(new_rows)):
            a, b = old_rows[key], new_rows[key]
            if a["text"] == b["text"]:
                same += 1
                if a.get("reason") != b.get("reason"):
                    reasons += 1
                    lines.append(f"  same text, reason {a.get('reason')} -> {b.get('reason')}: {key}")
            elif is_earlier_stop(a, b):
                explained += 1
                cut = a["text"][len(b["text"]):]
                lines.append(f"  earlier stop {key}: kept {b['text']!r}, no longer shows {cut[:60]!r}")
            else:
                unexplained += 1
                lines.append(f"  DIFFERENT {key} ({a.get('reason')} -> {b.get('reason')}):\n"
                             f"    old {a['text']!r}\n    new {b['text']!r}")
        unexplained += len(missing)
        show(f"{path}: {same} same, {explained} cut by an earlier stop, "
             f"{len(old_rows.keys() & new_rows.keys()) - same - explained} different, {len(missing)} missing"
             + (f", {reasons} with another stop reason" if reasons else ""))
        for line in lines:
            show(line)
        for key in missing:
            show(f"  MISSING {key} in {'the new recording' if key in old_rows else 'the base'}")
    show(f"{unexplained} unexplained difference(s)")
    return unexplained


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="record the greedy outputs of every decoding path")
    rec.add_argument("out", type=Path)
    rec.add_argument("--n", type=int, default=200, help="cases per path (default 200)")
    rec.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    rec.add_argument("--only", default="engine,scheduler,pipeline", help="comma-separated paths to record")
    cmp = sub.add_parser("compare", help="compare two recordings; exit 1 on an unexplained difference")
    cmp.add_argument("base", type=Path)
    cmp.add_argument("new", type=Path, nargs="+", help="one recording, or several of different paths (--only)")
    args = parser.parse_args(argv)
    if args.command == "record":
        # one thread: on a shared machine two threads spin against each other (10x slower, measured)
        torch.set_num_threads(args.threads)
        record(args.out, args.n, tuple(args.only.split(",")))
        return 0
    try:
        base = json.loads(args.base.read_text())
        parts = [json.loads(p.read_text()) for p in args.new]
    except (OSError, ValueError) as exc:
        print(f"cannot read the recordings: {exc}", file=sys.stderr)
        return 2
    new = {"paths": {path: rows for part in parts for path, rows in part["paths"].items()}}
    return 1 if compare(base, new) else 0


if __name__ == "__main__":
    sys.exit(main())
