"""Chunked prefill: a long prompt is prefilled a chunk per turn between decode steps; its output
equals a one-shot prefill's, and a running stream keeps producing tokens while it is admitted."""

from __future__ import annotations

import asyncio

from codeassist.model import tokenizer as tok
from codeassist.remote.metrics import ServerMetrics
from codeassist.remote.scheduler import Delta, Failed, Finished, Job, Scheduler
from tests.remote.conftest import tiny_engine
from tests.remote.test_scheduler import alone, drain, prompts

LONG = (tok.EOT_ID, *tok.encode("def step(state, action):\n    return state + action\n\n\n" * 14))[:200]


def start(chunk: int, max_batch: int = 2, cache_bytes: int = 0) -> Scheduler:
    s = Scheduler(ServerMetrics(), max_batch=max_batch, prefill_chunk=chunk, prefix_cache_bytes=cache_bytes)
    e = tiny_engine()
    s.start(e.model, e.device, e.dtype)
    return s


async def test_chunked_prefill_equals_one_shot_prefill() -> None:
    assert len(LONG) == 200
    s = start(chunk=16)
    try:
        (text,), (fin,) = await drain(s.submit([Job(prompt=LONG, max_new_tokens=20, stop_on_eos=False)]))
        # a short prompt beside it still takes the batched one-shot path
        (short,), _ = await drain(s.submit([Job(prompt=prompts()[0], max_new_tokens=20, stop_on_eos=False)]))
    finally:
        s.stop()
    assert text == alone(LONG, 20) and fin.completion_tokens == 20
    assert short == alone(prompts()[0], 20)
    assert s.metrics.prefill_chunks._value.get() == 13  # ceil(200 / 16)
    assert s.metrics.tokens_in._value.get() == 200 + len(prompts()[0])


async def running_tokens_while_admitting(chunk: int) -> tuple[int, str]:
    """Deltas a running stream produced between a long prompt's submission and its first token."""
    s = start(chunk=chunk)
    try:
        running = s.submit([Job(prompt=prompts()[1], max_new_tokens=230, stop_on_eos=False)])
        while running._events.empty():  # it is running: its first token has come
            await asyncio.sleep(0.001)
        before = running._events.qsize()
        long = s.submit([Job(prompt=LONG, max_new_tokens=1, stop_on_eos=False)])
        texts, fins = await drain(long)
        # events reach the loop in the order the worker sent them: every delta the running stream
        # got before the long prompt's first token is in its queue now
        during = sum(isinstance(ev, Delta) for _, ev in list(running._events._queue)[before:])  # type: ignore[attr-defined]
        running.cancel()
        _, rfins = await drain(running)
    finally:
        s.stop()
    assert isinstance(fins[0], Finished) and rfins[0].reason == "cancelled"
    return during, texts[0]


async def test_a_running_stream_keeps_producing_tokens_while_a_long_prompt_is_admitted() -> None:
    during, text = await running_tokens_while_admitting(chunk=16)
    assert text == alone(LONG, 1)
    # 13 chunks, each followed by a decode step of the running row (deltas may merge bytes)
    assert during >= 8
    one_shot, _ = await running_tokens_while_admitting(chunk=256)
    assert one_shot <= 2  # the control: admitted in one prefill, nothing streamed meanwhile


async def wait_for_chunks(s: Scheduler, n: int) -> None:
    async with asyncio.timeout(30):
        while s.metrics.prefill_chunks._value.get() < n:
            await asyncio.sleep(0.005)


async def test_a_cancel_mid_prefill_frees_the_row_and_keeps_the_prefilled_part() -> None:
    s = Scheduler(ServerMetrics(), max_batch=1, prefill_chunk=16, prefix_cache_bytes=1 << 20)
    e = tiny_engine(delay_s=0.01)  # slow enough to cancel between chunks
    s.start(e.model, e.device, e.dtype)
    try:
        h = s.submit([Job(prompt=LONG, max_new_tokens=5, stop_on_eos=False)])
        await wait_for_chunks(s, 3)
        h.cancel()
        _, (fin,) = await drain(h)
        assert fin.reason == "cancelled" and fin.completion_tokens == 0
        kept = s.cache.lookup(LONG)[1]
        assert kept > 0 and kept % 16 == 0 and kept < len(LONG)  # the chunks it had prefilled
        # the single row is free again, and the next request starts from the kept chunks
        (text,), (again,) = await drain(s.submit([Job(prompt=LONG, max_new_tokens=5, stop_on_eos=False)]))
    finally:
        s.stop()
    assert text == alone(LONG, 5) and again.cached_tokens == kept


async def test_a_model_error_mid_prefill_fails_that_request_and_the_next_one_succeeds(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from codeassist.remote.batch import BatchState

    real = BatchState.extend
    calls = {"n": 0}

    def broken_third(self: BatchState, tokens: list[int]):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return real(self, tokens)

    monkeypatch.setattr(BatchState, "extend", broken_third)
    s = start(chunk=16)
    try:
        h = s.submit([Job(prompt=LONG, max_new_tokens=5, stop_on_eos=False)])
        _, ev = await asyncio.wait_for(h.next(), 30)
        assert isinstance(ev, Failed) and ev.status == 500
        (text,), _ = await drain(s.submit([Job(prompt=LONG, max_new_tokens=5, stop_on_eos=False)]))
    finally:
        s.stop()
    assert text == alone(LONG, 5) and s.in_flight == 0
