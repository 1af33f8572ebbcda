"""Continuous batching with sampling and a seed: a sequence's output does not depend on the batch.

Each sequence samples from its own seeded generator, so what else runs beside it (how many rows,
greedy or unseeded neighbours, rows joining and leaving) must not change its text. Checked on
the scheduler directly and over HTTP, where concurrent requests must equal the same requests
sent one at a time.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from codeassist.model.engine import Engine
from codeassist.model.gpt import GPT
from codeassist.model.sampling import SamplingParams
from codeassist.remote.metrics import ServerMetrics
from codeassist.remote.scheduler import Job, Scheduler
from codeassist.remote.settings import ServerSettings
from tests.conftest import make_tiny
from tests.remote.conftest import Live, start_server
from tests.remote.test_scheduler import drain, prompts

SEEDED = [Job(prompt=p, max_new_tokens=n, stop_on_eos=False, seed=seed,
              sampling=SamplingParams(temperature=t, top_k=k))
          for p, n, seed, t, k in zip(prompts(), [9, 14, 5, 11], [1, 2, 3, 4], [1.0, 0.7, 1.2, 1.0],
                                      [0, 40, 100, 0], strict=False)]
# neighbours: a greedy sequence and an unseeded sampled one (it draws from the global generator)
NEIGHBOURS = [Job(prompt=prompts()[4], max_new_tokens=7, stop_on_eos=False),
              Job(prompt=prompts()[5], max_new_tokens=12, stop_on_eos=False,
                  sampling=SamplingParams(temperature=1.0))]


async def run(groups: list[list[Job]], max_batch: int) -> tuple[list[list[str]], float]:
    """Each group submitted as one request (its jobs wait together), then every group drained."""
    metrics = ServerMetrics()
    s = Scheduler(metrics, max_batch=max_batch)
    model = make_tiny()
    s.start(model, torch.device("cpu"), torch.float32)
    try:
        handles = [s.submit(g) for g in groups]
        texts = [(await drain(h, len(g)))[0] for h, g in zip(handles, groups, strict=True)]
    finally:
        s.stop()
    return texts, metrics.batch_steps._value.get()


async def test_a_seeded_sequence_samples_the_same_text_whatever_runs_beside_it() -> None:
    alone = []
    for job in SEEDED:
        (texts,), _ = await run([[job]], max_batch=1)
        alone.append(texts[0])
    assert len(set(alone)) == len(alone)  # sampled, not one repeated string
    # all together through 3 rows: rows join and leave as the sequences finish
    (together,), steps = await run([SEEDED], max_batch=3)
    assert together == alone
    # reversed, with neighbours that sample differently, through 6 rows
    (mixed,), _ = await run([[*NEIGHBOURS, *reversed(SEEDED)]], max_batch=6)
    assert mixed[2:] == alone[::-1]
    # the sequences did share decode steps
    assert steps < sum(j.max_new_tokens for j in SEEDED) - len(SEEDED)


class GatedGPT(GPT):
    """The tiny model, holding its first forward pass until the test opens the gate: the requests
    sent meanwhile wait in the queue, so they are admitted and decoded together."""

    gate = threading.Event()

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not self.gate.wait(30):
            raise TimeoutError("the test never opened the gate")
        return super().forward(*args, **kwargs)


def gated_engine() -> Engine:
    model = GatedGPT(make_tiny().config)
    model.load_state_dict(make_tiny().state_dict())
    return Engine(model.eval(), torch.device("cpu"), name="tiny")


BODIES = [{"prompt": text, "max_tokens": n, "temperature": t, "top_k": k, "seed": seed, "ignore_eos": True}
          for text, n, t, k, seed in [("def add(a, b):\n    return", 10, 1.0, 0, 11),
                                      ("import os\nimport sys\n", 6, 0.8, 50, 12),
                                      ("class Stack:\n    def push(self, x):", 13, 1.1, 0, 13),
                                      ("for i in range(10):\n", 8, 1.0, 20, 14)]]


def complete(live: Live, body: dict[str, object]) -> str:
    with live.client() as c:
        r = c.post("/v1/completions", json=body)
        r.raise_for_status()
        text: str = r.json()["choices"][0]["text"]
        return text


def wait_for(predicate: Any, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_concurrent_http_requests_equal_the_same_requests_sent_alone() -> None:
    GatedGPT.gate.clear()
    live = start_server(ServerSettings(port=0, max_batch=4), gated_engine)
    try:
        with ThreadPoolExecutor(len(BODIES)) as pool:
            futures = [pool.submit(complete, live, b) for b in BODIES]
            # the first request holds the model; the others queue behind it
            wait_for(lambda: live.state.scheduler.in_flight == len(BODIES))
            GatedGPT.gate.set()
            together = [f.result(timeout=60) for f in futures]
        steps = live.metric("codeassist_batch_steps_total")
        alone = [complete(live, b) for b in BODIES]
    finally:
        GatedGPT.gate.set()
        live.stop()
    assert together == alone
    assert len(set(alone)) == len(alone)
    # the queued requests did run as one batch: fewer steps than their tokens one by one
    assert steps < sum(int(b["max_tokens"]) for b in BODIES) - len(BODIES)  # type: ignore[call-overload]
