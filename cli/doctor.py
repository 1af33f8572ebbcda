"""`codeassist doctor`: which model, device and backend are in use, and whether they work."""

from __future__ import annotations

import argparse
import json
import platform
import time
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="the model to check (name or path)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--json", action="store_true")


def diagnose(model: str, device: str) -> tuple[dict[str, Any], list[str]]:
    """(facts, problems): every check runs; a failing one is a problem line, never an exception."""
    import torch

    from codeassist.model.checkpoint import ModelFileError
    from codeassist.model.engine import Engine, GenerationRequest, pick_device
    from codeassist.model.stops import StopRules
    from codeassist.model.store import data_dir, list_models, resolve_model
    from codeassist.model.tokenizer import TokenizerError, encode

    facts: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                             "cuda_available": torch.cuda.is_available(), "threads": torch.get_num_threads(),
                             "data_dir": str(data_dir()), "models": list_models()}
    problems: list[str] = []
    try:
        facts["device"] = str(pick_device(device))
    except ValueError as exc:
        problems.append(str(exc))
    try:
        encode("def f(): pass")
        facts["tokenizer"] = "ok"
    except TokenizerError as exc:
        problems.append(str(exc))
    try:
        path, name = resolve_model(model)
        facts["model"] = name
        facts["model_path"] = str(path)
        t0 = time.perf_counter()
        engine = Engine.load(model, device=device)
        facts["load_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
        if engine.info is not None:
            facts["quantization"] = engine.info.scheme
            facts["provenance"] = engine.info.provenance
        facts["config"] = json.loads(engine.config.to_json())
        res = engine.generate(GenerationRequest(prompt=tuple(encode("import os\n")),
                                                stop=StopRules(max_new_tokens=8, stop_on_eos=False)))
        facts["generate_ms"] = round(res.total_ms, 1)
        facts["sample"] = res.text
    except (ModelFileError, ValueError) as exc:
        problems.append(str(exc))
    return facts, problems


def run(args: argparse.Namespace) -> int:
    facts, problems = diagnose(args.model, args.device)
    if args.json:
        print(json.dumps({**facts, "problems": problems}, indent=1, default=str))
    else:
        for key, value in facts.items():
            if key not in ("provenance", "config"):
                print(f"{key:>14}: {value!r}" if key == "sample" else f"{key:>14}: {value}")
        if "config" in facts:
            c = facts["config"]
            print(f"{'shape':>14}: {c['n_layer']} layers, {c['n_head']} heads, {c['n_embd']} wide, "
                  f"context {c['block_size']}")
        prov = facts.get("provenance") or {}
        if prov:
            print(f"{'trained':>14}: {prov.get('steps')} steps, {prov.get('tokens_seen')} tokens, "
                  f"val loss {prov.get('val_loss')}")
        for p in problems:
            print(f"{'problem':>14}: {p}")
        print("all checks passed" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0
