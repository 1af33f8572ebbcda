"""Typing traffic cancels most requests: a cancelled request waiting in the queue gives its place
back at once, so a burst of superseded keystrokes does not fill the queue and refuse the next."""

from __future__ import annotations

import asyncio

from codeassist.remote.scheduler import Job, QueueFull
from tests.remote.test_scheduler import drain, prompts, start


async def test_cancelled_waiting_requests_do_not_hold_places_in_the_queue() -> None:
    s = start(max_batch=1, max_queue=2, delay_s=0.01)
    p = prompts()[0]
    try:
        busy = s.submit([Job(prompt=p, max_new_tokens=200, stop_on_eos=False)])
        await asyncio.wait_for(busy.next(), 30)  # it holds the one row; the queue is empty
        superseded = [s.submit([Job(prompt=p, max_new_tokens=4)]) for _ in range(2)]
        try:
            s.submit([Job(prompt=p, max_new_tokens=4)])
            raise AssertionError("QueueFull expected: the queue holds two live requests")
        except QueueFull:
            pass
        for h in superseded:
            h.cancel()
        latest = s.submit([Job(prompt=p, max_new_tokens=4, stop_on_eos=False)])  # the newest keystroke
        for h in superseded:
            _, (fin,) = await drain(h)
            assert fin.reason == "cancelled"
        busy.cancel()
        _, (fin,) = await drain(latest)
    finally:
        s.stop()
    assert fin.completion_tokens == 4
    assert s.metrics.queued._value.get() == 0 and s.in_flight == 0
