"""The completion pipeline: context → cache → mode → prompt → backend → post-processing.

Plain dataclasses in and out; no LSP types. The newest request for a document supersedes the
one before it: its task is cancelled, which stops the backend's work within one decode step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from codeassist.lsp.backends import Backend, BackendResult, CompletionRequest
from codeassist.lsp.cache import CompletionCache
from codeassist.lsp.context import CompletionContext, Mode, completion_mode
from codeassist.lsp.postprocess import postprocess
from codeassist.lsp.prompt import prompt_for, repo_context
from codeassist.lsp.settings import Settings
from codeassist.lsp.workspace import WorkspaceIndex
from codeassist.model.copy import Candidate
from codeassist.model.prompting import TAIL_TOKENS, Prompt, strip_forced
from codeassist.model.stop_policy import stop_policy
from codeassist.model.stops import StopRules
from codeassist.model.tokenization import Tokenizer, resolve

log = logging.getLogger(__name__)

# While typing (automatic requests) the user moves on sooner than when asking explicitly: a
# suggestion cut at this budget is still shown, and typing through it continues it from the
# suggestion cache and the engine's KV cache.
TYPING_TIME_BUDGET_MS = 180
DEFAULT_CONTEXT_TOKENS = 2048  # when a backend does not say (remote)
# With a remote backend, a copy candidate whose match before the cursor is at least this long is
# the suggestion (no request): on requests and urllib3, 2 in 3 such candidates were the exact line.
REMOTE_COPY_MIN_CHARS = 40
TYPED_CHARS = 400  # text before the cursor tokenized as typed, for copy lookups (about TAIL_TOKENS)


@dataclass(frozen=True)
class Completion:
    text: str  # to insert at the cursor; empty means no suggestion
    mode: Mode
    reason: str | None = None  # why the text is empty
    from_cache: bool = False
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    reused_tokens: int = 0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1]) of `values`; 0.0 when there are none."""
    if not values:
        return 0.0
    data = sorted(values)
    return data[min(len(data) - 1, int(q * len(data)))]


class LatencyWindow:
    def __init__(self, size: int = 200) -> None:
        self._ms: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self._ms.append(ms)

    def percentile(self, q: float) -> float | None:
        return percentile(self._ms, q) if self._ms else None


class Pipeline:
    def __init__(self, backend: Backend, settings: Settings) -> None:
        self.backend = backend
        self.settings = settings
        self.cache = CompletionCache()
        self.latency = LatencyWindow()
        self.last_reason: str | None = None
        self._inflight: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self.workspace: WorkspaceIndex | None = None  # copy candidates from the user's code
        self.copies_taken = 0
        self.last_reused = 0  # prompt tokens whose keys and values the last request reused

    @property
    def tokenizer(self) -> Tokenizer:
        """The backend's model's tokenizer: a local engine's own, else ours (a remote backend
        sends text; its copy lookups and prompt budget are in ours unless it says otherwise)."""
        tk = getattr(self.backend, "tokenizer", None)  # LocalBackend: its loaded engine's
        return resolve(tk if isinstance(tk, Tokenizer) else None)

    def reconfigure(self, settings: Settings, backend_factory: Callable[[Settings], Backend]) -> Backend | None:
        """Take new settings. When they choose another backend (kind, model, device or remote), build
        it with `backend_factory`, start it and forget the old one's suggestions; the old backend is
        returned for the caller to close (`await previous.aclose()`), else None."""
        old, self.settings = self.settings, settings
        if (settings.backend, settings.model, settings.device, settings.remote) == \
                (old.backend, old.model, old.device, old.remote):
            return None
        previous = self.backend
        self.backend = backend_factory(settings)
        self.cache.clear()
        self.backend.start()
        return previous

    async def complete(self, ctx: CompletionContext, invoked: bool = False, channel: str = "inline"
                       ) -> Completion:
        """Run for the current task; a newer call for the same document and channel cancels this one.

        `invoked`: the user asked explicitly (not a request made while typing); it gets the longer
        time budget. `channel` keeps inline and classic completions from superseding each other."""
        me = asyncio.current_task()
        key = (ctx.uri, channel)
        old = self._inflight.get(key)
        if old is not None and old is not me and not old.done():
            old.cancel()
        if me is not None:
            self._inflight[key] = me
        try:
            result = await self._complete(ctx, invoked)
        finally:
            if self._inflight.get(key) is me:
                del self._inflight[key]
        self.latency.add(result.latency_ms)
        self.last_reason = result.reason
        self.last_reused = result.reused_tokens
        return result

    async def _complete(self, ctx: CompletionContext, invoked: bool) -> Completion:
        t0 = time.perf_counter()
        s = self.settings
        mode = completion_mode(ctx, s.multiline)
        if mode is Mode.NONE:
            return Completion("", mode, "the cursor is inside a word", latency_ms=_ms(t0))
        if s.cache:
            hit = self.cache.lookup(ctx)
            if hit is not None:
                return Completion(hit, mode, from_cache=True, latency_ms=_ms(t0))
        if s.debounce_ms:
            await asyncio.sleep(s.debounce_ms / 1000)
        status = self.backend.status()
        if not status.ready and invoked:  # the user asked: wait for the model, up to the time budget
            status = await self.backend.wait_until_ready(s.time_budget_ms / 1000)
        if not status.ready:
            return Completion("", mode, status.reason or "the backend is not ready", latency_ms=_ms(t0))
        max_tokens = s.max_tokens
        context_tokens = status.context_tokens or DEFAULT_CONTEXT_TOKENS
        tk = self.tokenizer
        prompt = prompt_for(ctx, min(s.max_prompt_tokens, context_tokens - max_tokens), tokenizer=tk)
        budget_ms = s.time_budget_ms if invoked else min(s.time_budget_ms, TYPING_TIME_BUDGET_MS)
        found = self._copy_candidates(ctx, prompt, tk)
        request = CompletionRequest(prompt=prompt, max_tokens=max_tokens, temperature=s.temperature,
                                    stop=stops_for(ctx, mode), time_budget_s=budget_ms / 1000,
                                    reuse_prefix=s.prefix_reuse, copy=tuple(c.text for c in found),
                                    repo=repo_context(ctx) if ctx.snippets else None)
        t1 = time.perf_counter()
        if found and status.backend == "remote" and found[0].match_chars >= REMOTE_COPY_MIN_CHARS:
            # a team server cannot score our candidates: a long match is taken without asking it
            result = BackendResult(strip_forced(found[0].text, prompt.forced), "stop", copied=True)
        else:
            result = await self.backend.complete(request)
        log.debug("prompt %.1f ms, backend %.1f ms (engine %.1f ms, %d tokens, %d reused)", (t1 - t0) * 1e3,
                  _ms(t1), result.ms, result.prompt_tokens, result.reused_tokens)
        text, dropped_by = postprocess(result.text, ctx, mode)
        reason = None
        if not text:
            reason = result.reason or (f"the suggestion was dropped by {dropped_by}" if dropped_by
                                       else "the model suggested nothing")
        else:
            self.copies_taken += result.copied
            if s.cache:
                self.cache.store(ctx, text)
        return Completion(text, mode, reason, latency_ms=_ms(t0), prompt_tokens=result.prompt_tokens,
                          reused_tokens=result.reused_tokens)


    def _copy_candidates(self, ctx: CompletionContext, prompt: Prompt, tk: Tokenizer) -> list[Candidate]:
        if not self.settings.copy or self.workspace is None or not prompt.tail:
            return []
        if self.workspace.tokenizer is not tk:  # the model loaded with its own tokenizer: re-index
            self.workspace.set_tokenizer(tk)
        cursor = ctx.prefix_offset + len(ctx.prefix)
        # one candidate, the copy heuristic's choice: the embedded model's scores picked worse
        # among several than the longest match did (benchmarks/README.md), and each costs a pass
        typed = tk.encode(prompt.prefix[-TYPED_CHARS:])[-TAIL_TOKENS:]
        return self.workspace.candidates(ctx.uri, cursor, list(prompt.tail), prompt.forced, limit=1, typed=typed)


def stops_for(ctx: CompletionContext, mode: Mode) -> StopRules:
    """Stops decided while decoding (the one policy's): the newline in LINE mode; in BLOCK a new
    top-level unit, a line dedented below the block, or the code below the cursor."""
    return stop_policy(ctx.suffix, ctx.language, line=mode is Mode.LINE, line_prefix=ctx.line_prefix)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3
