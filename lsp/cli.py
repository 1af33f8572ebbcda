"""`codeassist lsp [--stdio | --tcp HOST:PORT]`: run the language server.

Top-level imports stay light (argparse only): torch is imported only if a local model loads.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from codeassist.lsp.backends import CompletionRequest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (the default)")
    where.add_argument("--tcp", metavar="HOST:PORT",
                       help="listen on TCP (HOST defaults to 127.0.0.1, e.g. --tcp :2087)")
    parser.add_argument("--model", default=None, help="model name or path (default: the embedded model)")
    parser.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"], help="where the model runs")
    # for tests and benchmarks: a deterministic backend with no model
    parser.add_argument("--backend", default=None, choices=["local", "remote", "fake"], help=argparse.SUPPRESS)
    parser.add_argument("--fake-delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)


def parse_host_port(value: str) -> tuple[str, int]:
    from codeassist.model.errors import UserError

    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"--tcp expects HOST:PORT (for example 127.0.0.1:2087), not {value!r}")
    return host or "127.0.0.1", int(port)


def scripted_response(request: CompletionRequest) -> str:
    """The fake backend's answers, which end-to-end tests steer through the document text."""
    line = request.prompt.prefix.rsplit("\n", 1)[-1]
    if "RAISE_IN_BACKEND" in request.prompt.prefix:
        raise RuntimeError("a scripted failure in the fake backend")
    if "ECHO" in request.prompt.prefix:
        return "  # seen " + line.encode("unicode_escape").decode("ascii")
    return "fake_completion()"


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from codeassist.lsp.backends import FakeBackend
    from codeassist.lsp.server import CodeassistServer, default_backend_factory, serve_stdio, serve_tcp
    from codeassist.lsp.settings import Settings

    settings = Settings()
    overrides = {k: v for k, v in (("model", args.model), ("device", args.device),
                                   ("backend", args.backend)) if v is not None}
    settings = replace(settings, **overrides)
    factory = default_backend_factory
    if settings.backend == "fake":
        delay = args.fake_delay_ms / 1000

        def factory(s: Settings) -> FakeBackend:  # type: ignore[misc]
            return FakeBackend(scripted_response, steps=20 if delay else 1, step_s=delay / 20 if delay else 0.0)

    tcp = parse_host_port(args.tcp) if args.tcp else None
    server = CodeassistServer(settings, factory)
    code = serve_tcp(server, *tcp) if tcp else serve_stdio(server)
    sys.stderr.flush()
    # Exit now: a model still loading or a generation in flight must not hold the process open
    # (the editor expects the process gone right after `exit`).
    os._exit(code)
