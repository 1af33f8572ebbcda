"""The backend seam: the only module that knows whether the model runs here or on a team server.

`LocalBackend` owns the in-process Engine in one worker thread (the event loop never runs the
model), imports torch only when it starts loading, loads eagerly in the background so the first
request does not pay for it, and stops a generation within one decode step when its request is
cancelled. `RemoteBackend` asks a team server through `codeassist.remote.client`. `FakeBackend`
is deterministic, for tests.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from codeassist.model.errors import UserFacingError
from codeassist.model.prompting import Prompt, RepoContext, strip_forced
from codeassist.model.stops import StopRules
from codeassist.remote.settings import RemoteSettings

if TYPE_CHECKING:
    from codeassist.model.engine import Engine
    from codeassist.model.tokenization import Tokenizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompletionRequest:
    prompt: Prompt
    max_tokens: int
    temperature: float = 0.0
    stop: StopRules = field(default_factory=StopRules)  # the policy's; its budget fields are ignored
    time_budget_s: float | None = None
    reuse_prefix: bool = True
    copy: tuple[str, ...] = ()  # copy candidates (begin with prompt.forced); the model decides
    repo: RepoContext | None = None  # the snippets as repository files (a remote raw template's layout)


@dataclass(frozen=True)
class BackendResult:
    text: str  # what follows the cursor (the healed text already removed)
    stop_reason: str  # eos | stop | max_tokens | time | cancelled | context | unavailable | error
    reason: str | None = None  # one sentence when the result is empty for a reason of the backend's
    prompt_tokens: int = 0
    reused_tokens: int = 0
    ms: float = 0.0
    copied: bool = False  # the text began with a copy candidate the model accepted


@dataclass(frozen=True)
class BackendStatus:
    backend: str
    model: str
    device: str
    ready: bool
    reason: str | None = None  # why it is not ready
    context_tokens: int | None = None  # prompt + output must fit this


class Backend(Protocol):
    def start(self) -> None:
        """Begin loading or connecting in the background; returns at once."""

    def status(self) -> BackendStatus: ...

    async def wait_until_ready(self, timeout_s: float) -> BackendStatus:
        """The status once the backend is ready or has failed, or after `timeout_s`, whichever is first;
        the event loop keeps running meanwhile. For requests the user asked for explicitly."""

    async def complete(self, request: CompletionRequest) -> BackendResult:
        """Cancelling the awaiting task stops the work (within one decode step locally)."""

    async def aclose(self) -> None: ...


MAX_THREADS = 4  # batch-1 decoding gains little from more


class LocalBackend:
    """`threads`: a fixed number of CPU threads; None (the default) takes the cores that other
    processes left idle since the previous request, chosen again before every request (with
    one core busy, two-thread decoding collapses 2-4x while one thread loses nothing; with
    both idle, two threads prefill 1.8x faster)."""

    def __init__(self, model: str = "default", device: str = "auto", threads: int | None = None,
                 cores: Callable[[], int] | None = None) -> None:
        self.model = model
        self.device = device
        self.threads = threads
        self._cores = cores  # the free-core count per request (lsp/resources.CoreWatch when None)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="codeassist-engine")
        self._engine: Engine | None = None
        self._error: str | None = None
        self._loading = False
        self._loaded = threading.Event()

    def start(self) -> None:
        if not self._loading and self._engine is None and self._error is None:
            self._loading = True
            self._executor.submit(self._load)

    def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            import torch

            from codeassist.model.engine import Engine

            if self.threads is None and self._cores is None:
                from codeassist.lsp.resources import CoreWatch

                self._cores = CoreWatch()
            torch.set_num_threads(self._threads_now())
            engine = Engine.load(self.model, device=self.device)
            _warm_up(engine)
            self._engine = engine
            log.info("model %s loaded in %.2f s", self._engine.name, time.perf_counter() - t0)
        except Exception as exc:
            self._error = _one_sentence(exc)
            log.error("the model could not be loaded: %s", self._error)
        finally:
            self._loading = False
            self._loaded.set()

    def _threads_now(self) -> int:
        """The fixed thread count, else the cores free now (1 to MAX_THREADS); on the worker thread."""
        if self.threads is not None:
            return max(1, self.threads)
        free = self._cores() if self._cores is not None else 1
        return max(1, min(MAX_THREADS, free))

    @property
    def tokenizer(self) -> Tokenizer | None:
        """The loaded model's own tokenizer (None until it has loaded)."""
        return self._engine.tokenizer if self._engine is not None else None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block this thread until the model has loaded (True) or failed (False), at most `timeout`."""
        self._loaded.wait(timeout)
        return self._engine is not None

    async def wait_until_ready(self, timeout_s: float) -> BackendStatus:
        if not self._loaded.is_set():
            self.start()
            # a worker thread waits on the load, so the event loop keeps answering; cancelling the
            # awaiting request leaves that thread waiting out at most timeout_s
            await asyncio.to_thread(self._loaded.wait, max(0.0, timeout_s))
        return self.status()

    def status(self) -> BackendStatus:
        engine = self._engine
        if engine is None:
            reason = self._error or "the model is still loading"
            return BackendStatus("local", self.model, self.device, False, reason)
        return BackendStatus("local", engine.name, engine.device.type, True,
                             context_tokens=engine.context_tokens)

    async def complete(self, request: CompletionRequest) -> BackendResult:
        engine = self._engine
        if engine is None:
            self.start()
            return BackendResult("", "unavailable", self.status().reason)
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._run, engine, request, cancel)
        except asyncio.CancelledError:
            cancel.set()  # the worker stops after the current decode step
            raise

    def _run(self, engine: Engine, request: CompletionRequest, cancel: threading.Event) -> BackendResult:
        if engine.device.type == "cpu":
            import torch

            threads = self._threads_now()
            if threads != torch.get_num_threads():  # changing the pool costs ~0.1 ms: only when it differs
                torch.set_num_threads(threads)
        return self._generate(engine, request, cancel)

    @staticmethod
    def _generate(engine: Engine, request: CompletionRequest, cancel: threading.Event) -> BackendResult:
        from codeassist.model.engine import CopyParams, GenerationRequest
        from codeassist.model.sampling import SamplingParams

        if cancel.is_set():
            return BackendResult("", "cancelled")
        if not request.reuse_prefix:
            engine.reset_prefix()  # benchmarks: measure what KV prefix reuse saves
        prompt = request.prompt
        req = GenerationRequest(
            prompt=prompt.ids, forced_prefix=prompt.forced_prefix,
            sampling=SamplingParams(temperature=request.temperature),
            stop=replace(request.stop, max_new_tokens=request.max_tokens, time_budget_s=request.time_budget_s),
            copy=CopyParams(candidates=request.copy))
        result = engine.generate(req, cancel)
        return BackendResult(strip_forced(result.text, prompt.forced), result.stop_reason,
                             prompt_tokens=result.prompt_tokens, reused_tokens=result.reused_tokens,
                             ms=result.total_ms, copied=result.copied is not None)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class FakeBackend:
    """Deterministic: answers `respond(request)` after `steps` pauses of `step_s` each.

    The pauses stand for decode steps: cancellation is checked between them, as the engine does,
    and `steps_run` records how many ran, so tests can see that a cancel stops the work.
    """

    def __init__(self, respond: Callable[[CompletionRequest], str] | None = None, steps: int = 1,
                 step_s: float = 0.0, ready: bool = True, reason: str | None = None) -> None:
        self.respond = respond or (lambda request: "fake_completion()")
        self.steps = steps
        self.step_s = step_s
        self.ready = ready
        self.reason = reason
        self.requests: list[CompletionRequest] = []
        self.steps_run = 0
        self.cancelled = 0

    def start(self) -> None:
        pass

    def status(self) -> BackendStatus:
        return BackendStatus("fake", "fake", "cpu", self.ready, None if self.ready else self.reason,
                             context_tokens=1024)

    async def wait_until_ready(self, timeout_s: float) -> BackendStatus:
        return self.status()  # it never loads anything

    async def complete(self, request: CompletionRequest) -> BackendResult:
        if not self.ready:
            return BackendResult("", "unavailable", self.reason)
        self.requests.append(request)
        t0 = time.perf_counter()
        try:
            for _ in range(self.steps):
                await asyncio.sleep(self.step_s)
                self.steps_run += 1
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        text = self.respond(request)
        return BackendResult(text, "stop", prompt_tokens=len(request.prompt.ids),
                             ms=(time.perf_counter() - t0) * 1e3)

    async def aclose(self) -> None:
        pass


class RemoteBackend:
    """A team server (our API, OpenAI-compatible with a family's FIM template, llama.cpp or Ollama)
    through RemoteClient.

    When the server cannot be reached and `fallback` is given (setting `remote.fallbackLocal`),
    the request is answered by that backend instead, started only on the first failure.
    """

    def __init__(self, config: RemoteSettings, transport: Any = None, fallback: Backend | None = None) -> None:
        self.config = config
        self.transport = transport  # an httpx transport, for tests
        self.fallback = fallback
        self._client: Any = None
        self._last_error: str | None = None

    def start(self) -> None:
        pass  # connections open on the first request

    def status(self) -> BackendStatus:
        if not self.config.url:
            return BackendStatus("remote", self.config.model or "", "remote", False,
                                 "codeassist.remote.url is not set")
        return BackendStatus("remote", self.config.model or self.config.url, "remote", True,
                             self._last_error)

    async def wait_until_ready(self, timeout_s: float) -> BackendStatus:
        return self.status()  # ready unless unconfigured; connections open on the first request

    def _get_client(self) -> Any:
        if self._client is None:
            from codeassist.remote.client import RemoteClient

            c = self.config
            self._client = RemoteClient(c, self.transport)
            template = self._client.template
            log.info("remote backend: %s API at %s, model %s, FIM template %s%s", c.api, c.url, c.model or "-",
                     template.name if template else "none", " (from the model's name)" if c.template == "auto" else "")
        return self._client

    async def complete(self, request: CompletionRequest) -> BackendResult:
        if not self.config.url:
            return BackendResult("", "unavailable", "codeassist.remote.url is not set")
        from codeassist.remote.client import RemoteError

        t0 = time.perf_counter()
        prompt = request.prompt
        try:
            client = self._get_client()
            # what the builder made: the context and prefix text, and the healed part for our server
            text = await client.complete(
                prompt.text_prefix, prompt.suffix, max_tokens=request.max_tokens,
                temperature=request.temperature, stop=list(request.stop.strings), healed=prompt.forced,
                repo=request.repo, context=prompt.context, dedent_line_prefix=request.stop.dedent_line_prefix)
        except RemoteError as exc:
            self._last_error = str(exc)
            if self.fallback is not None:
                self.fallback.start()  # idempotent: loads the local model once, in the background
                local = await self.fallback.complete(request)
                if local.text or local.reason:
                    return local
                return replace(local, reason=f"answered by the local model: {exc}")
            return BackendResult("", "error", str(exc), ms=(time.perf_counter() - t0) * 1e3)
        self._last_error = None
        return BackendResult(str(text), "stop", ms=(time.perf_counter() - t0) * 1e3)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _warm_up(engine: Engine) -> None:
    """One tiny healed generation: builds the healing index and warms the kernels, so the
    user's first request costs what every later one does. Three tokens, so two decode steps:
    TorchScript compiles the scripted step on its first call (~80 ms here) and optimizes it on
    its second (~10 ms; model/scripted_decode.py)."""
    from codeassist.model.engine import GenerationRequest, StopRules

    tok = engine.tokenizer  # the model's own: an open family's ids are not GPT-2's
    ids = tok.encode("def main():\n    ")
    engine.generate(GenerationRequest(prompt=(*tok.lead_ids(), *ids[:-1]), forced_prefix=tok.token_bytes(ids[-1]),
                                      stop=StopRules(max_new_tokens=3, stop_on_eos=False)))


def make_backend(kind: str, model: str, device: str, remote: RemoteSettings) -> Backend:
    if kind == "remote":
        return RemoteBackend(remote, fallback=LocalBackend(model, device) if remote.fallback_local else None)
    if kind == "fake":
        return FakeBackend()
    return LocalBackend(model, device)


def _one_sentence(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, UserFacingError):  # a model file or tokenizer that cannot be read
        return text
    return f"the model could not be loaded ({type(exc).__name__}: {text[:200]})"
