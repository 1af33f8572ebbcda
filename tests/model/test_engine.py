"""The engine: cache decoding equals naive decoding, prefix reuse equals cold, stop rules hold."""

import threading
import time

import pytest
import torch

from codeassist.model import engine as engine_module
from codeassist.model import tokenizer as tok
from codeassist.model.engine import Engine, GenerationRequest, StopRules, fit_to_context
from codeassist.model.gpt import GPT
from codeassist.model.sampling import SamplingParams
from tests.conftest import make_tiny

PROMPT = tuple(tok.encode("def add(a, b):\n    return a + b\n\ndef mul(a, b):\n    return"))


def naive_greedy(model: GPT, prompt: list[int], n: int) -> list[int]:
    """No cache: the whole sequence is recomputed for every new token."""
    ids = list(prompt)
    out = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids]))[0, -1].argmax())
            out.append(nxt)
            ids.append(nxt)
    return out


def request(prompt: tuple[int, ...] = PROMPT, n: int = 20, **kw: object) -> GenerationRequest:
    stop = StopRules(max_new_tokens=n, stop_on_eos=False)
    return GenerationRequest(prompt=prompt, stop=stop, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cached_greedy_equals_naive_greedy(seed: int) -> None:
    model = make_tiny(seed)
    expected = naive_greedy(model, list(PROMPT), 24)
    got = Engine(make_tiny(seed), torch.device("cpu")).generate(request(n=24)).tokens
    assert got == expected


def test_prefix_reuse_gives_exactly_the_cold_output() -> None:
    warm = Engine(make_tiny(), torch.device("cpu"))
    first = warm.generate(request(PROMPT[:-3]))
    assert first.reused_tokens == 0
    again = warm.generate(request(PROMPT))  # the user typed a few characters more
    assert again.reused_tokens == len(PROMPT) - 3
    cold = Engine(make_tiny(), torch.device("cpu")).generate(request(PROMPT))
    assert again.tokens == cold.tokens
    # a prompt that extends into the generated text reuses that too, and still matches a cold run
    longer = PROMPT + tuple(again.tokens[:5])
    warm_longer = warm.generate(request(longer))
    assert warm_longer.reused_tokens == len(longer) - 1
    assert warm_longer.tokens == Engine(make_tiny(), torch.device("cpu")).generate(request(longer)).tokens


def test_a_diverging_prompt_reuses_only_the_common_prefix() -> None:
    engine = Engine(make_tiny(), torch.device("cpu"))
    engine.generate(request(PROMPT))
    other = PROMPT[:5] + tuple(tok.encode(" something else entirely"))
    res = engine.generate(request(other))
    assert res.reused_tokens == 5
    assert res.tokens == Engine(make_tiny(), torch.device("cpu")).generate(request(other)).tokens


def test_max_tokens_and_stop_strings() -> None:
    engine = Engine(make_tiny(), torch.device("cpu"))
    full = engine.generate(request(n=30))
    assert len(full.tokens) == 30 and full.stop_reason == "max_tokens"
    # stop at a string that the unconstrained output contains: the text ends right before it
    needle = full.text[10:14]
    stopped = engine.generate(GenerationRequest(prompt=PROMPT, stop=StopRules(
        max_new_tokens=30, stop_strings=(needle,), stop_on_eos=False)))
    assert stopped.stop_reason == "stop"
    assert needle not in stopped.text and full.text.startswith(stopped.text)
    assert len(stopped.tokens) < 30  # decided while decoding, not trimmed afterwards


def test_eos_stops() -> None:
    model = make_tiny()
    forward = model.forward

    def eos_after_three(*args: object, **kw: object) -> torch.Tensor:
        logits = forward(*args, **kw)  # type: ignore[arg-type]
        pos = args[1] if len(args) > 1 else None
        if pos is not None and int(pos.max()) >= len(PROMPT) + 2:  # type: ignore[attr-defined]
            logits[..., tok.EOT_ID] += 1e4
        return logits

    model.forward = eos_after_three  # type: ignore[method-assign]
    res = Engine(model, torch.device("cpu")).generate(GenerationRequest(prompt=PROMPT))
    assert res.stop_reason == "eos" and len(res.tokens) == 3
    assert tok.EOT_ID not in res.tokens


def test_cancel_flag_is_read_after_every_token() -> None:
    cancel = threading.Event()
    cancel.set()
    res = Engine(make_tiny(), torch.device("cpu")).generate(request(n=50), cancel)
    assert res.stop_reason == "cancelled" and len(res.tokens) == 1


class FakeClock:
    """The engine's `time` module, with a clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def test_time_budget_stops_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(engine_module, "time", clock)
    engine = Engine(make_tiny(), torch.device("cpu"))
    step = engine.decode_one_token

    def one_second_step(token: int, pos: int) -> torch.Tensor:
        clock.now += 1.0
        return step(token, pos)

    engine.decode_one_token = one_second_step  # type: ignore[method-assign]
    res = engine.generate(GenerationRequest(prompt=PROMPT, stop=StopRules(
        max_new_tokens=200, stop_on_eos=False, time_budget_s=4.5)))
    # token k is chosen at second k - 1: the 6th, at 5 s, is the first past the 4.5 s budget
    assert res.stop_reason == "time" and len(res.tokens) == 6


def test_time_budget_starts_after_the_prefill(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow (cold) prefill does not use up the budget of the suggestion it was paid for."""
    clock = FakeClock()
    monkeypatch.setattr(engine_module, "time", clock)
    engine = Engine(make_tiny(), torch.device("cpu"))
    step, prefill = engine.decode_one_token, engine.prefill

    def one_second_step(token: int, pos: int) -> torch.Tensor:
        clock.now += 1.0
        return step(token, pos)

    def ten_second_prefill(ids: list[int], start_pos: int) -> torch.Tensor:
        clock.now += 10.0
        return prefill(ids, start_pos)

    engine.decode_one_token = one_second_step  # type: ignore[method-assign]
    engine.prefill = ten_second_prefill  # type: ignore[method-assign]
    res = engine.generate(GenerationRequest(prompt=PROMPT, stop=StopRules(
        max_new_tokens=200, stop_on_eos=False, time_budget_s=4.5)))
    assert res.stop_reason == "time" and len(res.tokens) == 6  # as without the prefill's 10 s


def test_forced_prefix_is_spelled_out_first() -> None:
    engine = Engine(make_tiny(), torch.device("cpu"))
    res = engine.generate(request(n=8, forced_prefix=b" mul_resul"))
    assert res.text.startswith(" mul_resul")


def test_sampling_is_reproducible_with_a_seed() -> None:
    engine = Engine(make_tiny(), torch.device("cpu"))
    params = SamplingParams(temperature=1.0, top_k=50, top_p=0.9)
    a = engine.generate(request(n=16, sampling=params, seed=3)).tokens
    b = engine.generate(request(n=16, sampling=params, seed=3)).tokens
    c = engine.generate(request(n=16, sampling=params, seed=4)).tokens
    assert a == b and a != c


def test_a_prompt_longer_than_the_context_keeps_the_end() -> None:
    prompt = list(range(1000, 1400))
    kept, max_new, truncated = fit_to_context(prompt, 56, 256)
    assert truncated and max_new == 56 and kept == prompt[-200:]
    res = Engine(make_tiny(), torch.device("cpu")).generate(request(tuple(prompt), n=56))
    assert res.truncated_prompt and res.prompt_tokens == 200 and len(res.tokens) == 56


@pytest.mark.parametrize("method", ["none", "prompt_lookup"])
def test_a_block_stops_while_decoding_at_the_dedent(method: str) -> None:
    """BLOCK mode ends at the line indented less than the block as that line arrives, not after
    max tokens; with speculation too (a draft that runs past the dedent is cut there)."""
    from codeassist.model.speculative import SpeculationParams
    from tests.model.test_speculative import scripted

    body = "x = 1\n    y = 2\nz = 3\n"
    prompt = tok.encode("def f():\n" + body + "def g():\n    ")
    engine = Engine(scripted(prompt + tok.encode(body * 4)), torch.device("cpu"))
    rules = StopRules(max_new_tokens=60, stop_on_eos=False, dedent_line_prefix="    ")
    res = engine.generate(GenerationRequest(prompt=tuple(prompt), stop=rules,
                                            speculation=SpeculationParams(method=method)))
    assert res.text == "x = 1\n    y = 2" and res.stop_reason == "stop"
    assert len(res.tokens) == len(tok.encode("x = 1\n    y = 2\nz"))  # decoding ended at the "z"
    trimmed_after = engine.generate(GenerationRequest(prompt=tuple(prompt), stop=StopRules(
        max_new_tokens=60, stop_on_eos=False)))
    assert len(trimmed_after.tokens) == 60  # without the rule it decodes to max tokens
