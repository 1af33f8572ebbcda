"""`codeassist complete [FILE|-] [--line N --col N] ...`: print the completion at a position."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from codeassist.model.errors import UserError

SNIFF_BYTES = 8192


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", default="-", help="a source file, or - for standard input")
    p.add_argument("--line", type=int, help="1-based line of the cursor (default: end of input)")
    p.add_argument("--col", type=int, help="1-based column of the cursor, in characters (default: end of line)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--model", default="default", help="a model name (default, gpt2, a saved name) or path")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: the cores that are free)")
    p.add_argument("--json", action="store_true", help="print completion, model, tokens and latency as JSON")


def read_source(name: str) -> str:
    """The text of FILE or stdin; one clear UserError for empty, binary or non-UTF-8 input."""
    label = "standard input" if name == "-" else name
    try:
        data = sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except FileNotFoundError:
        raise UserError(f"{label}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{label} is a folder, not a file") from None
    except OSError as exc:
        raise UserError(f"cannot read {label}: {exc.strerror}") from None
    if not data.strip():
        raise UserError(f"{label} is empty; there is nothing to complete")
    if b"\0" in data[:SNIFF_BYTES]:
        raise UserError(f"{label} looks like a binary file, not source code")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{label} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def cursor_offset(text: str, line: int | None, col: int | None) -> int:
    """Character offset of a 1-based (line, col); the default is the end of the input."""
    if line is None and col is None:
        return len(text)
    lines = text.split("\n")
    if line is None:
        raise UserError("--col needs --line")
    if not 1 <= line <= len(lines):
        raise UserError(f"line {line} is out of range (the input has {len(lines)} lines)")
    length = len(lines[line - 1])
    if col is None:
        col = length + 1
    if not 1 <= col <= length + 1:
        raise UserError(f"column {col} is out of range (line {line} has {length} characters)")
    return sum(len(x) + 1 for x in lines[: line - 1]) + col - 1


def run(args: argparse.Namespace) -> int:
    if args.max_tokens < 1:
        raise UserError("--max-tokens must be at least 1")
    if args.temperature < 0:
        raise UserError("--temperature must be >= 0")
    text = read_source(args.file)
    offset = cursor_offset(text, args.line, args.col)

    import torch

    from codeassist.model.completion import complete
    from codeassist.model.engine import Engine
    from codeassist.model.threads import pick_threads

    torch.set_num_threads(pick_threads(args.threads))

    try:
        engine = Engine.load(args.model, device=args.device)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    t0 = time.perf_counter()
    completion, result = complete(engine, text[:offset], text[offset:], max_new_tokens=args.max_tokens,
                                  temperature=args.temperature)
    latency_ms = (time.perf_counter() - t0) * 1e3
    if args.json:
        print(json.dumps({"completion": completion, "model": engine.name, "device": str(engine.device),
                          "tokens": len(result.tokens), "prompt_tokens": result.prompt_tokens,
                          "stop_reason": result.stop_reason, "latency_ms": round(latency_ms, 1)}))
    else:
        sys.stdout.write(completion + ("" if completion.endswith("\n") else "\n"))
    return 0
