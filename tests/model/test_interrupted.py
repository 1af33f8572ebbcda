"""After an interrupted generation, the next request gives exactly a cold run's output.

An interruption leaves the KV cache in an odd state: a cancel or a time budget stops between a
token's choice and its decode step, a stop string inside an accepted draft leaves drafted tokens
past the output in the cache (and rejected ones in slots past them), and an error can strike
halfway through a forward pass, with some layers' keys and values already written. Prefix reuse
must keep only what is really in the cache, so every follow-up request here starts from the
state the interruption left and is compared, token for token, with the same request on a cold
engine.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable

import pytest
import torch

from codeassist.model import engine as engine_mod
from codeassist.model import tokenizer as tok
from codeassist.model.engine import CopyParams, Engine, GenerationRequest, GenerationResult, StopRules
from codeassist.model.gpt import GPT
from codeassist.model.sampling import SamplingParams
from codeassist.model.speculative import SpeculationParams
from tests.conftest import make_tiny

PROMPT = tuple(tok.encode("def add(a, b):\n    return a + b\n\ndef mul(a, b):\n    return"))
CPU = torch.device("cpu")
SAMPLED = SamplingParams(temperature=1.0, top_k=50)  # varied output: greedy tiny models repeat a token
DRAFT = SpeculationParams(method="draft")


def request(prompt: tuple[int, ...], n: int = 10, **kw: object) -> GenerationRequest:
    stop = kw.pop("stop", StopRules(max_new_tokens=n, stop_on_eos=False))
    return GenerationRequest(prompt=prompt, stop=stop, **kw)  # type: ignore[arg-type]


def first_request(n: int = 30, **kw: object) -> GenerationRequest:
    """The request that gets interrupted: sampled with a seed, so a rerun is the same run."""
    return request(PROMPT, n=n, sampling=SAMPLED, seed=3, **kw)


def sharp_tiny() -> GPT:
    """The tiny model with its matrices scaled up: sharp attention and logits, so that a wrong key
    or value in the cache changes the output (at GPT-2's initial scale it hardly would)."""
    model = make_tiny()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    return model


def near_copy() -> GPT:
    """A draft model that agrees with the target often but not always: drafts are kept and rejected."""
    model, gen = sharp_tiny(), torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.002)
    return model


def engine(speculative: bool = False) -> Engine:
    return Engine(sharp_tiny(), CPU, draft_model=near_copy() if speculative else None)


def generate(eng: Engine, req: GenerationRequest) -> tuple[GenerationResult, torch.Tensor]:
    """The result, and the logits after the prompt: a stale cache slot shows there even when the
    argmax or the sampled token happens not to change."""
    prefill, seen = eng.prefill, []

    def recording_prefill(ids: list[int], start_pos: int) -> torch.Tensor:
        seen.append(prefill(ids, start_pos))
        return seen[-1]

    eng.prefill = recording_prefill  # type: ignore[method-assign]
    try:
        return eng.generate(req), seen[0]
    finally:
        del eng.prefill


_cold: dict[tuple[GenerationRequest, bool], tuple[GenerationResult, torch.Tensor]] = {}


def cold_run(req: GenerationRequest, speculative: bool = False) -> tuple[GenerationResult, torch.Tensor]:
    if (req, speculative) not in _cold:
        _cold[req, speculative] = generate(engine(speculative), req)
    return _cold[req, speculative]


def cold(req: GenerationRequest, speculative: bool = False) -> list[int]:
    return cold_run(req, speculative)[0].tokens


def assert_next_requests_are_cold(warm: Engine, interrupt: Callable[[], GenerationResult],
                                  full: list[int], speculative: bool = False,
                                  reuse_at_least: int = len(PROMPT) + 1) -> None:
    """What an editor sends next, each right after the interruption: the same prompt, part of the
    output accepted, all of it accepted and more typed (on the line, or on a new one), a prompt
    that runs past where the output stopped, and one that diverges before the end of the prompt."""
    emitted = interrupt().tokens
    greedy: dict[str, object] = {}
    sampled: dict[str, object] = {"sampling": SamplingParams(temperature=0.8, top_k=40), "seed": 7}
    cases = [(PROMPT, greedy), (PROMPT + tuple(emitted[:2]), sampled),
             (PROMPT + tuple(emitted) + tuple(tok.encode(" = 1")), greedy),
             (PROMPT + tuple(emitted) + tuple(tok.encode("\n")) + tuple(tok.encode("x = 1")), greedy),
             (PROMPT + tuple(full[:len(emitted) + 6]), greedy),
             (PROMPT + tuple(full[:len(emitted) + 6]), sampled),
             (PROMPT[:-4] + tuple(tok.encode(" something else")), greedy)]
    spec = DRAFT if speculative else SpeculationParams()
    reused = []
    for i, (prompt, kw) in enumerate(cases):
        if i:
            assert interrupt().tokens == emitted  # the same state each time
        # stopping at the end of text: with stop_on_eos off, the engine can choose one of the
        # vocabulary's padding ids and then fail to spell it out
        req = request(prompt, speculation=spec, stop=StopRules(max_new_tokens=10), **kw)  # type: ignore[arg-type]
        got, logits = generate(warm, req)
        expected, expected_logits = cold_run(req, speculative)
        assert got.tokens == expected.tokens, f"follow-up {i}"
        torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4, msg=f"follow-up {i}")
        reused.append(got.reused_tokens)
    assert max(reused) >= reuse_at_least  # the follow-ups did reuse what the cache kept


@pytest.fixture(scope="module")
def uninterrupted() -> list[int]:
    return cold(first_request())


def test_after_a_cancel(uninterrupted: list[int]) -> None:
    warm = engine()
    step = warm.decode_one_token
    cancel, steps = threading.Event(), [0]

    def counting_step(token: int, pos: int) -> torch.Tensor:
        steps[0] += 1
        if steps[0] == 5:
            cancel.set()  # as the server's cancel handler does, while this step runs
        return step(token, pos)

    def interrupt() -> GenerationResult:
        cancel.clear()
        steps[0] = 0
        res = warm.generate(first_request(), cancel)
        assert res.stop_reason == "cancelled" and res.tokens == uninterrupted[:6]
        return res

    warm.decode_one_token = counting_step  # type: ignore[method-assign]
    assert_next_requests_are_cold(warm, interrupt, uninterrupted)


def test_after_a_time_budget_stop(monkeypatch: pytest.MonkeyPatch, uninterrupted: list[int]) -> None:
    warm = engine()
    budget = StopRules(max_new_tokens=30, stop_on_eos=False, time_budget_s=7.5)

    def interrupt() -> GenerationResult:
        ticks = iter(range(10**6))  # a fake clock, one second a reading: no dependence on speed
        with monkeypatch.context() as m:
            m.setattr(engine_mod, "time", types.SimpleNamespace(perf_counter=lambda: float(next(ticks))))
            res = warm.generate(first_request(stop=budget))
        assert res.stop_reason == "time" and 1 < len(res.tokens) < 30
        assert res.tokens == uninterrupted[:len(res.tokens)]
        return res

    assert_next_requests_are_cold(warm, interrupt, uninterrupted)


def test_after_a_stop_string_inside_a_draft() -> None:
    warm = engine(speculative=True)
    full = cold(first_request(speculation=DRAFT), speculative=True)

    def stop_at(i: int) -> GenerationRequest:
        needle = tok.decode(full[i:i + 1])
        return first_request(speculation=DRAFT, stop=StopRules(max_new_tokens=30, stop_on_eos=False,
                                                                 stop_strings=(needle,)))

    def inside_a_draft(i: int) -> bool:
        res = warm.generate(stop_at(i))
        # the verify pass kept drafts past the stop: their keys and values are in the cache
        return res.stop_reason == "stop" and len(warm._cached) > len(PROMPT) + len(res.tokens)

    # the latest such stop: earlier verify passes have rejected drafts, leaving stale slots behind
    where = next(i for i in range(20, 0, -1) if inside_a_draft(i))

    def interrupt() -> GenerationResult:
        res = warm.generate(stop_at(where))
        assert res.stop_reason == "stop" and res.tokens == full[:where + 1]
        assert len(warm._cached) > len(PROMPT) + len(res.tokens)
        return res

    assert_next_requests_are_cold(warm, interrupt, full, speculative=True)


class BackendError(RuntimeError):
    pass


def fail_in_layer(model: GPT, layer: int, on_call: int) -> None:
    """Make transformer block `layer` raise on its `on_call`-th call (earlier layers have run)."""
    block = model.transformer.h[layer]
    forward, calls = block.forward, [0]

    def flaky(*args: object, **kw: object) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == on_call:
            del block.forward  # once only
            raise BackendError("the device fell over")
        out: torch.Tensor = forward(*args, **kw)
        return out

    block.forward = flaky


# a request that diverges early: layer 0 overwrites the cache slots after the shared prefix
OTHER = PROMPT[:5] + tuple(tok.encode(" lambda x: x * 2\n\nclass Foo:\n    pass"))


def test_after_a_backend_error_in_a_prefill(uninterrupted: list[int]) -> None:
    warm = engine()

    def interrupt() -> GenerationResult:
        res = warm.generate(first_request(n=10))  # the cache holds PROMPT and an output
        fail_in_layer(warm.model, layer=1, on_call=1)
        with pytest.raises(BackendError):
            warm.generate(request(OTHER, n=20))
        return res

    assert_next_requests_are_cold(warm, interrupt, uninterrupted, reuse_at_least=5)


def test_after_a_backend_error_in_a_decode_step(uninterrupted: list[int]) -> None:
    warm = engine()

    def interrupt() -> GenerationResult:
        fail_in_layer(warm.model, layer=1, on_call=6)  # the prefill, 4 steps, then the 5th step fails
        with pytest.raises(BackendError):
            warm.generate(first_request())
        # 5 tokens were chosen; the 5th was being fed
        return GenerationResult(tokens=uninterrupted[:5], text="", stop_reason="error", prompt_tokens=0)

    assert_next_requests_are_cold(warm, interrupt, uninterrupted)


def test_after_a_backend_error_in_a_verify_pass() -> None:
    warm = engine(speculative=True)
    full = cold(first_request(speculation=DRAFT), speculative=True)
    score = warm.score_tokens
    passes, failed_at = [0], [0]

    def flaky_score(ids: list[int], start_pos: int) -> torch.Tensor:
        passes[0] += 1
        if passes[0] == 3:
            fail_in_layer(warm.model, layer=1, on_call=1)  # this pass dies halfway through the model
            failed_at[0] = start_pos
        return score(ids, start_pos)

    def interrupt() -> GenerationResult:
        passes[0] = 0
        with pytest.raises(BackendError):
            warm.generate(first_request(speculation=DRAFT))
        # the output up to the token the failed pass was feeding
        chosen = full[:failed_at[0] + 1 - len(PROMPT)]
        return GenerationResult(tokens=chosen, text="", stop_reason="error", prompt_tokens=0)

    warm.score_tokens = flaky_score  # type: ignore[method-assign]
    assert_next_requests_are_cold(warm, interrupt, full, speculative=True)


@pytest.mark.parametrize("taken", [0, 1], ids=["first-candidate", "last-candidate"])
def test_after_a_copied_line(taken: int) -> None:
    """Copy-aware decoding scores every candidate in the cache's slots after the prompt, then
    answers with one of them: the slots must end up holding the one taken."""
    warm = engine()
    candidates = (" a * b", " mul(a, b - 1) + a")
    # min_logprob -inf: the best candidate is always taken; `taken` says which one that must be
    probe = warm.generate(request(PROMPT, n=30, copy=CopyParams(candidates=candidates, min_logprob=float("-inf"))))
    assert all(s > float("-inf") for s in probe.copy_scores)  # both were scored in the cache
    order = candidates if candidates.index(str(probe.copied)) == taken else candidates[::-1]
    copy = CopyParams(candidates=order, min_logprob=float("-inf"))

    def interrupt() -> GenerationResult:
        res = warm.generate(request(PROMPT, n=30, copy=copy))
        assert res.copied == order[taken] and res.tokens
        return res

    assert_next_requests_are_cold(warm, interrupt, cold(request(PROMPT, n=30)))
