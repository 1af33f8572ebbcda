"""Continuous batching: joining and leaving at token boundaries changes no sequence's output."""

from __future__ import annotations

import asyncio
import functools
import time

import torch

from codeassist.model import tokenizer as tok
from codeassist.model.engine import Engine, GenerationRequest, StopRules
from codeassist.remote.batch import BatchState
from codeassist.remote.metrics import ServerMetrics
from codeassist.remote.scheduler import Delta, Failed, Finished, Handle, Job, QueueFull, Scheduler
from tests.conftest import make_tiny
from tests.remote.conftest import tiny_engine

TEXTS = ["def add(a, b):\n    return", "import os\nimport sys\n\n", "class Stack:\n    def __init__(self):",
         "for i in range(10):\n", "x = [1, 2, 3]\nprint(", "# a comment\n"]


def prompts() -> list[tuple[int, ...]]:
    return [(tok.EOT_ID, *tok.encode(t)) for t in TEXTS]


@functools.cache
def reference_engine() -> Engine:
    return Engine(make_tiny(), torch.device("cpu"))


@functools.cache
def alone(prompt: tuple[int, ...], n: int, stop: tuple[str, ...] = ()) -> str:
    """The batch-1 engine's greedy text: what every batched sequence must reproduce."""
    engine = reference_engine()
    req = GenerationRequest(prompt=prompt, stop=StopRules(max_new_tokens=n, stop_strings=stop, stop_on_eos=False))
    return engine.generate(req).text


async def drain(handle: Handle, n: int = 1) -> tuple[list[str], list[Finished]]:
    texts = [""] * n
    done: list[Finished | None] = [None] * n
    while any(d is None for d in done):
        i, ev = await asyncio.wait_for(handle.next(), 30)
        if isinstance(ev, Delta):
            texts[i] += ev.text
        elif isinstance(ev, Finished):
            done[i] = ev
        else:
            raise AssertionError(f"failed: {ev}")
    return texts, [d for d in done if d is not None]


def start(max_batch: int, max_queue: int = 64, max_prefill_tokens: int = 2048, delay_s: float = 0.0) -> Scheduler:
    s = Scheduler(ServerMetrics(), max_batch=max_batch, max_queue=max_queue, max_prefill_tokens=max_prefill_tokens)
    e = tiny_engine(delay_s)
    s.start(e.model, e.device, e.dtype)
    return s


async def test_outputs_equal_batch_one_generation_while_rows_join_and_leave() -> None:
    # 6 sequences through 2 rows, each with its own length: rows are freed, compacted and refilled
    lengths = [5, 17, 9, 23, 3, 12]
    s = start(max_batch=2, max_prefill_tokens=16)
    try:
        handles = [s.submit([Job(prompt=p, max_new_tokens=n, stop_on_eos=False)])
                   for p, n in zip(prompts(), lengths, strict=True)]
        results = [await drain(h) for h in handles]
    finally:
        s.stop()
    for p, n, (texts, fins) in zip(prompts(), lengths, results, strict=True):
        assert texts[0] == alone(p, n)
        assert fins[0].reason == "max_tokens" and fins[0].completion_tokens == n


async def test_prompts_of_different_lengths_prefilled_together_decode_as_alone() -> None:
    # moved from Engine.generate_batch (gone): one right-padded prefill of three cold prompts
    three = [prompts()[0], prompts()[0][:9], prompts()[1]]
    s = start(max_batch=4)
    try:
        handle = s.submit([Job(prompt=p, max_new_tokens=12, stop_on_eos=False) for p in three])
        texts, fins = await drain(handle, 3)
    finally:
        s.stop()
    assert texts == [alone(p, 12) for p in three]
    assert [f.completion_tokens for f in fins] == [12, 12, 12]


async def test_each_sequence_keeps_its_own_stop_rules() -> None:
    p0, p1 = prompts()[:2]
    full = alone(p0, 30)
    stop = full[10:14]
    s = start(max_batch=4)
    try:
        a = s.submit([Job(prompt=p0, max_new_tokens=30, stop=(stop,), stop_on_eos=False)])
        b = s.submit([Job(prompt=p1, max_new_tokens=25, stop_on_eos=False)])
        (ta, fa), (tb, fb) = await drain(a), await drain(b)
    finally:
        s.stop()
    assert ta[0] == full[:full.index(stop)] and fa[0].reason == "stop" and fa[0].finish_reason == "stop"
    assert tb[0] == alone(p1, 25) and fb[0].reason == "max_tokens" and fb[0].finish_reason == "length"


async def test_cancel_frees_the_row_within_a_step_for_the_waiting_request() -> None:
    s = start(max_batch=1, delay_s=0.02)
    p0, p1 = prompts()[:2]
    try:
        long = s.submit([Job(prompt=p0, max_new_tokens=200, stop_on_eos=False)])
        waiting = s.submit([Job(prompt=p1, max_new_tokens=3, stop_on_eos=False)])
        seen = 0
        while seen < 3:
            _, ev = await asyncio.wait_for(long.next(), 10)
            seen += isinstance(ev, Delta)
        long.cancel()
        _, fins = await drain(long)
        _, wf = await drain(waiting)
    finally:
        s.stop()
    assert fins[0].reason == "cancelled"
    assert fins[0].completion_tokens <= seen + 2  # the step in progress, and the one whose event was in flight
    assert wf[0].completion_tokens == 3


async def test_full_queue_refuses_with_a_retry_hint_and_admitted_work_finishes() -> None:
    s = start(max_batch=1, max_queue=2, delay_s=0.01)
    p = prompts()[0]
    try:
        admitted = [s.submit([Job(prompt=p, max_new_tokens=4, stop_on_eos=False)]) for _ in range(2)]
        try:
            s.submit([Job(prompt=p, max_new_tokens=4)] * 3)
            raise AssertionError("QueueFull expected")
        except QueueFull as exc:
            assert exc.retry_after_s >= 1
        for h in admitted:
            _, fins = await drain(h)
            assert fins[0].completion_tokens == 4
    finally:
        s.stop()


async def test_a_sequence_whose_time_runs_out_in_the_queue_fails_with_503() -> None:
    s = start(max_batch=1, delay_s=0.02)
    p = prompts()[0]
    try:
        busy = s.submit([Job(prompt=p, max_new_tokens=40, stop_on_eos=False)])
        late = s.submit([Job(prompt=p, max_new_tokens=4, deadline=time.monotonic() + 0.1)])
        _, ev = await asyncio.wait_for(late.next(), 10)
        assert isinstance(ev, Failed) and ev.status == 503
        _, fins = await drain(busy)
        assert fins[0].completion_tokens == 40
    finally:
        s.stop()
    assert s.metrics.rejected.labels(reason="queue_timeout")._value.get() == 1


async def test_a_model_error_fails_its_sequences_and_the_next_request_succeeds(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    s = start(max_batch=2)
    real = BatchState.decode
    calls = {"n": 0}

    def broken_once(self: BatchState) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real(self)

    monkeypatch.setattr(BatchState, "decode", broken_once)
    p = prompts()[0]
    try:
        h = s.submit([Job(prompt=p, max_new_tokens=5, stop_on_eos=False)])
        events = []
        while not events or not isinstance(events[-1], Failed | Finished):
            events.append((await asyncio.wait_for(h.next(), 10))[1])
        assert isinstance(events[-1], Failed) and events[-1].status == 500
        texts, fins = await drain(s.submit([Job(prompt=p, max_new_tokens=5, stop_on_eos=False)]))
    finally:
        s.stop()
    assert texts[0] == alone(p, 5) and fins[0].completion_tokens == 5


def test_batch_state_compaction_keeps_the_moved_row_exact() -> None:
    model = make_tiny()
    batch = BatchState(model, 3, torch.device("cpu"), torch.float32)
    ps = [list(p) for p in prompts()[:3]]
    outs: list[list[int]] = [[], [], []]
    owners = [0, 1, 2]
    with torch.inference_mode():
        logits = batch.prefill(ps)
        for step in range(12):
            for row, owner in enumerate(owners):
                t = int(logits[row].argmax())
                outs[owner].append(t)
                batch.rows[row].token = t
            if step == 4:  # the first sequence leaves; the last one moves into its row
                assert batch.remove(0) == 2
                owners = [2, 1]
            logits = batch.decode()
    for owner, n in enumerate((5, 12, 12)):
        assert tok.decode(outs[owner]) == alone(tuple(ps[owner]), n)


async def test_a_caller_that_waits_for_whole_answers_gets_each_text_in_one_delta() -> None:
    """submit(stream=False): no event per token (the worker does not wake the event loop for each);
    each sequence's whole text arrives as one Delta right before its Finished, the same text a
    streaming caller puts together."""
    s = start(max_batch=4)
    jobs = [Job(prompt=p, max_new_tokens=12, stop_on_eos=False) for p in prompts()[:2]]
    try:
        streamed = await drain(s.submit(jobs), 2)
        handle = s.submit(jobs, stream=False)
        events: list[tuple[int, object]] = []
        while sum(isinstance(ev, Finished) for _, ev in events) < 2:
            events.append(await asyncio.wait_for(handle.next(), 30))
    finally:
        s.stop()
    for i in range(2):
        mine = [ev for j, ev in events if j == i]
        assert len(mine) == 2 and isinstance(mine[0], Delta) and isinstance(mine[1], Finished)
        assert mine[0].text == streamed[0][i] and mine[0].text
    assert streamed[0] == [alone(j.prompt, 12) for j in jobs]
