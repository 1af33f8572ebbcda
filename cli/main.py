"""Dispatch: parse the subcommand, import its module lazily, run it, turn errors into one line.

Each subcommand module exposes `add_arguments(parser)` and `run(args) -> int`. Importing lazily
keeps `codeassist lsp` with a remote backend from ever importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from importlib import metadata

from codeassist.model.errors import UserFacingError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "complete": ("codeassist.cli.complete", "print a completion for a file at a position"),
    "lsp": ("codeassist.lsp.cli", "run the language server (stdio or TCP)"),
    "train": ("codeassist.training.cli", "fine-tune a model on your own repositories"),
    "quantize": ("codeassist.quantization.cli", "write an int8 / int4 / GPTQ model"),
    "serve": ("codeassist.remote.cli", "run the team completion server"),
    "eval": ("codeassist.evaluation.cli", "drive the language server headless and score it"),
    "doctor": ("codeassist.cli.doctor", "show which model, device and backend are in use"),
    "export": ("codeassist.cli.export", "write a model for vLLM / transformers (hf) or llama.cpp / Ollama (gguf)"),
}


def _version() -> str:
    try:
        return metadata.version("codeassist")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(prog="codeassist", description="Private, local code completion.")
    parser.add_argument("--version", action="version", version=f"codeassist {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules: dict[str, object] = {}
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)  # light at the top: heavy imports are in run()
        module.add_arguments(sub.add_parser(name, help=help_text, description=help_text))
        modules[name] = module
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser, modules = build_parser()
    args = parser.parse_args(args_list)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.command:
        parser.print_help()
        return 2
    return run_guarded(modules[args.command], args)


def run_guarded(module: object, args: argparse.Namespace) -> int:
    try:
        return int(module.run(args))  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        print("codeassist: interrupted", file=sys.stderr)
        return 130
    except UserFacingError as exc:
        print(f"codeassist: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        if os.environ.get("CODEASSIST_DEBUG"):
            raise
        print(f"codeassist: internal error: {type(exc).__name__}: {str(exc)[:300]} "
              "(set CODEASSIST_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


def _alias(command: str) -> int:
    return main([command, *sys.argv[1:]])


def lsp_main() -> int:
    return _alias("lsp")


def train_main() -> int:
    return _alias("train")


def serve_main() -> int:
    return _alias("serve")


if __name__ == "__main__":
    sys.exit(main())
