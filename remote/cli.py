"""`codeassist serve`: the team server. Top-level imports stay light (argparse only)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from codeassist.model.errors import UserFacingError

if TYPE_CHECKING:
    from codeassist.remote.settings import ServerSettings


class ServeError(UserFacingError):
    """The server could not serve; str() is one sentence."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; any other needs --api-key-file)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default="default", help="a model name or path (default: the embedded model)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--api-key-file", help="a file with one API key a line; clients send Bearer KEY")
    parser.add_argument("--allow-no-auth", action="store_true",
                        help="serve a non-loopback address without API keys (a proxy authenticates)")
    parser.add_argument("--max-batch", type=int, default=16, help="rows of the running batch")
    parser.add_argument("--max-queue", type=int, default=64, help="waiting requests before 429")
    parser.add_argument("--prefix-cache-mb", type=int, default=256,
                        help="memory for prompt prefixes reused across requests, LRU (default 256; 0: off)")
    parser.add_argument("--prefill-chunk", type=int, default=256,
                        help="prefill long prompts this many tokens at a time between decode steps")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request body cap (413 above)")
    parser.add_argument("--max-tokens-limit", type=int, default=512, help="the most new tokens per request")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="seconds per request, queue included")
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to finish work on SIGTERM")
    parser.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                        help="allow browser requests from this origin (repeatable; none by default)")
    parser.add_argument("--cors-credentials", action="store_true", help="let CORS requests carry credentials")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for the model (default: all cores; 1 on a box shared with other work)")
    parser.add_argument("--served-name", default="", help="the model id /v1/models reports")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    from codeassist.remote.settings import ServerSettings, read_api_keys

    keys = read_api_keys(args.api_key_file) if args.api_key_file else ()
    return ServerSettings(host=args.host, port=args.port, model=args.model, device=args.device, api_keys=keys,
                          allow_no_auth_public=args.allow_no_auth, max_batch=args.max_batch,
                          max_queue=args.max_queue, prefix_cache_mb=args.prefix_cache_mb,
                          prefill_chunk_tokens=args.prefill_chunk, max_body_bytes=args.max_body_bytes,
                          max_tokens_limit=args.max_tokens_limit, request_timeout_s=args.request_timeout,
                          drain_timeout_s=args.drain_timeout, cors_origins=tuple(args.cors_origin),
                          cors_credentials=args.cors_credentials, served_name=args.served_name)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)  # refused settings fail before torch is imported

    from codeassist.model.checkpoint import read_info
    from codeassist.model.store import resolve_model
    from codeassist.remote.app import create_app
    from codeassist.remote.server import build_server

    if args.threads > 0:
        import torch

        # on a CPU shared with other work, a second thread waits on a busy core at every op
        torch.set_num_threads(args.threads)
    path, _ = resolve_model(settings.model)  # a wrong name or path fails now, in one sentence
    if not path.exists():
        raise ServeError(f"there is no model at {path}")
    if path.is_file():
        read_info(path)
    server = build_server(create_app(settings), settings.host, settings.port, args.log_level)
    server.run()
    if server.state.load_error:
        raise ServeError(f"the model failed to load: {server.state.load_error}")
    return 0
