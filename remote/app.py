"""The FastAPI app: lifespan (model load in a thread), middlewares, liveness/readiness, metrics.

`create_app(settings)` is the one way to build it; tests pass `load_engine` to use a tiny model.
The model loads in a worker thread started by the lifespan, so the server answers /health and
/ready (503) while a large model is still loading, as Kubernetes probes expect.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse, Response

from codeassist.remote import session
from codeassist.remote.errors import install_handlers
from codeassist.remote.limits import APIKeyAuth, BodyLimit, RequestGuard
from codeassist.remote.metrics import CONTENT_TYPE, ServerMetrics
from codeassist.remote.scheduler import Scheduler
from codeassist.remote.schema import HealthResponse, RootResponse
from codeassist.remote.settings import ServerSettings

if TYPE_CHECKING:
    from codeassist.model.engine import Engine
    from codeassist.model.tokenization import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    settings: ServerSettings
    metrics: ServerMetrics
    scheduler: Scheduler
    model_name: str = ""
    block_size: int = 0  # the engine's context: prompt + completion fit this
    tokenizer: Tokenizer | None = None  # the model's (None until it has loaded; then prompts use it)
    gpu_available: bool = False
    loaded: bool = False
    load_error: str | None = None
    draining: bool = False
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def status(self) -> str:
        if self.draining:
            return "draining"
        if self.load_error:
            return "failed"
        return "ok" if self.loaded else "loading"

    def start_draining(self) -> None:
        self.draining = True
        self.scheduler.stop_accepting()


def version() -> str:
    try:
        return metadata.version("codeassist")
    except metadata.PackageNotFoundError:
        return "unknown"


def _default_loader(settings: ServerSettings) -> Callable[[], Engine]:
    def load() -> Engine:
        from codeassist.model.engine import Engine

        return Engine.load(settings.model, device=settings.device)

    return load


def _load(state: ServerState, load_engine: Callable[[], Engine]) -> None:
    try:
        import torch

        engine = load_engine()
        _warm_up(engine.tokenizer)
        state.model_name = state.settings.served_name or engine.name
        state.block_size = engine.context_tokens
        state.tokenizer = engine.tokenizer
        state.gpu_available = torch.cuda.is_available()
        state.scheduler.start(engine.model, engine.device, engine.dtype, tokenizer=engine.tokenizer,
                              context=engine.context_tokens)
        state.loaded = True
        log.info("model %s loaded on %s; serving", state.model_name, engine.device)
    except Exception as exc:
        state.load_error = str(exc) or type(exc).__name__
        log.error("the model failed to load: %s", state.load_error)


def _warm_up(tokenizer: Tokenizer) -> None:
    """Build the tokenizer and its token-healing index now, not on a user's first request."""
    from codeassist.model.healing import allowed_tokens

    allowed_tokens(tokenizer.token_bytes(tokenizer.encode(" return")[0]), tokenizer)


def create_app(settings: ServerSettings, load_engine: Callable[[], Engine] | None = None) -> FastAPI:
    metrics = ServerMetrics()
    scheduler = Scheduler(metrics, settings.max_batch, settings.max_queue, settings.max_prefill_tokens,
                          prefix_cache_bytes=settings.prefix_cache_mb << 20,
                          prefill_chunk=settings.prefill_chunk_tokens)
    state = ServerState(settings, metrics, scheduler)
    loader = load_engine or _default_loader(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        thread = threading.Thread(target=_load, args=(state, loader), name="codeassist-load", daemon=True)
        thread.start()
        try:
            yield
        finally:
            state.start_draining()
            thread.join(timeout=settings.drain_timeout_s)
            state.scheduler.stop()

    middleware = [Middleware(RequestGuard)]
    if settings.cors_origins:
        # outside auth, so preflight requests and 401s carry the CORS headers
        middleware.insert(0, Middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                                        allow_credentials=settings.cors_credentials,
                                        allow_methods=["GET", "POST"],
                                        allow_headers=["Authorization", "Content-Type", session.HEADER]))
    middleware += [Middleware(APIKeyAuth, keys=settings.api_keys, on_reject=metrics.reject),
                   Middleware(BodyLimit, max_bytes=settings.max_body_bytes, on_reject=metrics.reject)]
    app = FastAPI(title="codeassist", version=version(), lifespan=lifespan, middleware=middleware,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    install_handlers(app, metrics.reject)

    @app.get("/")
    async def root() -> RootResponse:
        return RootResponse(service="codeassist", status=state.status, version=version())

    @app.get("/health")
    async def health() -> HealthResponse:
        # liveness: the process answers; model_loaded says whether completions can work
        return HealthResponse(status="ok" if not state.load_error else "degraded",
                              gpu_available=state.gpu_available, model_loaded=state.loaded)

    @app.get("/ready")
    async def ready() -> Response:
        ok = state.loaded and not state.draining
        return JSONResponse({"status": "ready" if ok else state.status}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    from codeassist.remote.openai_api import router as openai_router
    from codeassist.remote.seed_api import router as seed_router

    app.include_router(seed_router)
    app.include_router(openai_router)
    return app


def server_state(request: Request) -> ServerState:
    state = request.app.state.server
    assert isinstance(state, ServerState)
    return state
