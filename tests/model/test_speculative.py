"""Speculative decoding: greedy output unchanged, sampling keeps its distribution, stops cut drafts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from codeassist.model import tokenizer as tok
from codeassist.model.checkpoint import load_model
from codeassist.model.engine import Engine, GenerationRequest, StopRules
from codeassist.model.gpt import GPT
from codeassist.model.sampling import SamplingParams
from codeassist.model.speculative import (
    Drafter,
    NgramIndex,
    SpeculationParams,
    should_speculate,
    verify_greedy,
    verify_sampling,
)
from tests.conftest import make_tiny

CODE = "def add(a, b):\n    return a + b\n\ndef mul(a, b):\n    return a * b\n\ndef sub(a, b):\n    return"
REPEATING = tuple(tok.encode(CODE))
PLAIN = tuple(tok.encode("import os\nclass Config:\n    path = os.environ.get('HOME')\n"))
LOOKUP = SpeculationParams(method="prompt_lookup", num_draft=6)
DRAFT = SpeculationParams(method="draft", num_draft=4)
OFF = SpeculationParams()
DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "model" / "assets" / "default.safetensors"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    # these tests run many tiny ops; a second intra-op thread only spins on a shared 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def request(prompt: tuple[int, ...], n: int, spec: SpeculationParams = OFF,
            **kw: object) -> GenerationRequest:
    stop = kw.pop("stop", StopRules(max_new_tokens=n, stop_on_eos=False))
    return GenerationRequest(prompt=prompt, stop=stop, speculation=spec, **kw)  # type: ignore[arg-type]


# -- drafting ------------------------------------------------------------------------------------

def test_lookup_drafts_what_followed_the_latest_occurrence_of_the_longest_suffix() -> None:
    index = NgramIndex(1, 3)
    index.extend([1, 2, 3, 9, 1, 2, 3, 4, 5, 7, 2, 3])
    assert index.draft(3) == [4, 5, 7]  # "2 3" last continued with 4 5 7 (not the older 9)
    index.extend([9])
    assert index.draft(2) == [1, 2]  # "3 9" matched once, at the start
    index.extend([8])
    assert index.draft(4) == []  # 8 never occurred before


def test_drafting_pauses_after_repeated_misses_and_resumes() -> None:
    drafter = Drafter(LOOKUP, [5, 6, 5, 6, 5], None)
    assert drafter.propose([], 4, SamplingParams(), None)[0] == [6, 5]
    drafter.update(3, 0)
    drafter.update(1, 0)
    assert drafter.k == 4  # 6 - 1 - 1
    assert drafter.propose([], 4, SamplingParams(), None)[0] == []  # cooling down
    assert drafter.propose([], 4, SamplingParams(), None)[0] == []
    assert drafter.propose([], 4, SamplingParams(), None)[0] == [6, 5]


def test_speculation_switches_off_when_the_batch_is_busy() -> None:
    assert should_speculate(LOOKUP, 1)
    assert not should_speculate(LOOKUP, 2)
    assert should_speculate(SpeculationParams(method="prompt_lookup", max_batch=4), 4)
    assert not should_speculate(SpeculationParams(), 1)
    with pytest.raises(ValueError):
        SpeculationParams(method="medusa")


# -- greedy: exactly the plain output ------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("prompt", [REPEATING, PLAIN], ids=["repeating", "plain"])
def test_speculative_greedy_equals_plain_greedy_on_tiny_models(seed: int, prompt: tuple[int, ...]) -> None:
    engine = Engine(make_tiny(seed), torch.device("cpu"), draft_model=make_tiny(seed + 10))
    plain = engine.generate(request(prompt, 40))
    for spec in (LOOKUP, DRAFT):
        engine.reset_prefix()
        fast = engine.generate(request(prompt, 40, spec))
        assert fast.tokens == plain.tokens, spec.method
        assert fast.drafted_tokens > 0 and fast.verify_steps > 0
        assert fast.accepted_tokens <= fast.drafted_tokens


def test_a_draft_model_identical_to_the_target_is_always_accepted() -> None:
    engine = Engine(make_tiny(3), torch.device("cpu"), draft_model=make_tiny(3))
    res = engine.generate(request(PLAIN, 30, DRAFT))
    assert res.tokens == Engine(make_tiny(3), torch.device("cpu")).generate(request(PLAIN, 30)).tokens
    assert res.accepted_tokens == res.drafted_tokens > 20


def test_speculative_greedy_equals_plain_greedy_on_the_default_model() -> None:
    # the shipped weights, dequantized: with int8 the CPU kernel quantizes activations over the
    # whole input, so a verify step's rows can round differently from a one-row decode step and
    # flip a near-tie (it does on one token of this prompt with v1's int8 file; a per-row kernel
    # that keeps them equal cost 60-70% more decode time, model/quantized.py)
    from codeassist.model.quantized import dequantize_model

    model, _ = load_model(DEFAULT_MODEL)
    model = dequantize_model(model)
    engine = Engine(model, torch.device("cpu"), draft_model=make_tiny(0))
    plain = engine.generate(request(REPEATING, 24))
    for spec in (LOOKUP, DRAFT):
        engine.reset_prefix()
        assert engine.generate(request(REPEATING, 24, spec)).tokens == plain.tokens, spec.method


def test_prefix_reuse_after_a_speculative_request_matches_a_cold_run() -> None:
    engine = Engine(make_tiny(0), torch.device("cpu"))
    first = engine.generate(request(REPEATING, 20, LOOKUP))
    longer = REPEATING + tuple(first.tokens[:7])  # the user accepted part of the suggestion
    warm = engine.generate(request(longer, 20, LOOKUP))
    assert warm.reused_tokens == len(longer) - 1
    assert warm.tokens == Engine(make_tiny(0), torch.device("cpu")).generate(request(longer, 20)).tokens


def test_forced_prefix_holds_with_speculation() -> None:
    engine = Engine(make_tiny(0), torch.device("cpu"))
    res = engine.generate(request(REPEATING, 12, LOOKUP, forced_prefix=b" a_tota"))
    assert res.text.startswith(" a_tota")
    assert res.tokens == Engine(make_tiny(0), torch.device("cpu")).generate(
        request(REPEATING, 12, forced_prefix=b" a_tota")).tokens


# -- stop conditions inside an accepted draft ----------------------------------------------------

WORDS = [tok.encode(w)[0] for w in (" alpha", " beta", " gamma", " delta", " omega")]
A, B, C, D, E = WORDS


def scripted(script: list[int]) -> GPT:
    """A model whose greedy choice after position p is script[p + 1], whatever the input."""
    model = make_tiny()

    def forward(idx: torch.Tensor, input_pos: torch.Tensor | None = None, kv_len: int = 0,
                last_only: bool = False) -> torch.Tensor:
        T = idx.size(1)
        pos = input_pos if input_pos is not None else torch.arange(T).unsqueeze(0)
        pos = pos.expand(idx.size(0), T)
        if last_only:
            pos = pos[:, -1:]
        logits = torch.zeros(idx.size(0), pos.size(1), model.config.vocab_size)
        nxt = torch.tensor(script)[(pos + 1).clamp(max=len(script) - 1)]
        return logits.scatter(2, nxt.unsqueeze(-1), 10.0)

    model.forward = forward  # type: ignore[method-assign]
    return model


def scripted_run(continuation: list[int], stop: StopRules) -> tuple[list[int], object]:
    prompt = [A, B, C, D, E, tok.EOT_ID, A, B]  # the continuation repeats it: lookup drafts it all
    engine = Engine(scripted(prompt + continuation), torch.device("cpu"))
    res = engine.generate(GenerationRequest(prompt=tuple(prompt), stop=stop, speculation=LOOKUP))
    return res.tokens, res


def test_max_tokens_cuts_the_draft() -> None:
    tokens, res = scripted_run([C, D, E, A, B, C, D, E], StopRules(max_new_tokens=4, stop_on_eos=False))
    assert tokens == [C, D, E, A]
    # C comes from the prefill; the draft is capped at the 2 tokens before the last one wanted,
    # which the verify pass itself supplies
    assert (res.drafted_tokens, res.accepted_tokens, res.stop_reason) == (2, 2, "max_tokens")  # type: ignore[attr-defined]


def test_a_stop_string_inside_an_accepted_draft_ends_generation_there() -> None:
    stop = StopRules(max_new_tokens=20, stop_strings=(" delta",), stop_on_eos=False)
    tokens, res = scripted_run([C, D, E, A, B, C, D, E, A, B], stop)
    assert tokens == [C, D] and res.text == " gamma"  # type: ignore[attr-defined]
    assert res.stop_reason == "stop"  # type: ignore[attr-defined]
    assert res.accepted_tokens == 1 < res.drafted_tokens  # type: ignore[attr-defined]  # D kept; the rest cut


def test_eos_inside_an_accepted_draft_ends_generation_there() -> None:
    tokens, res = scripted_run([C, D, E, tok.EOT_ID, A, B, C], StopRules(max_new_tokens=20))
    assert tokens == [C, D, E]
    assert res.stop_reason == "eos" and tok.EOT_ID not in tokens  # type: ignore[attr-defined]
    assert res.accepted_tokens == 2 < res.drafted_tokens  # type: ignore[attr-defined]


def test_the_context_limit_caps_the_draft() -> None:
    engine = Engine(make_tiny(0), torch.device("cpu"))
    prompt = (REPEATING * 8)[-250:]  # block_size 256: six slots left
    res = engine.generate(request(prompt, 60, LOOKUP))
    plain = Engine(make_tiny(0), torch.device("cpu")).generate(request(prompt, 60))
    assert res.tokens == plain.tokens
    assert res.prompt_tokens + len(res.tokens) <= 256


# -- sampling: the target distribution -----------------------------------------------------------

def chi_square(samples: list[int], probs: torch.Tensor) -> float:
    counts = torch.bincount(torch.tensor(samples), minlength=probs.numel()).double()
    expected = probs.double() * len(samples)
    keep = expected > 0
    assert counts[~keep].sum() == 0, "sampled a token the target gives probability 0"
    return float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())


CRITICAL = 25.7  # chi-square, 5 degrees of freedom, p = 0.0001
V = 6
TARGET = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, 1.5], [0.0, 2.5, 0.5, 1.0, 0.2, -0.5],
                       [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
DRAFTQ = torch.softmax(torch.tensor([[0.0, 2.0, 1.0, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 2.0, 0.0, 0.0]]), -1)
SAMPLING = SamplingParams(temperature=1.0)


def first_two(verify: object, n_runs: int, model_draft: bool, seed: int = 0) -> tuple[list[int], list[int]]:
    """Emitted tokens 1 and 2 over many runs; the target's rows don't depend on the prefix."""
    gen = torch.Generator().manual_seed(seed)
    first, second = [], []
    for _ in range(n_runs):
        if model_draft:
            draft = [int(torch.multinomial(DRAFTQ[i], 1, generator=gen)) for i in range(2)]
            q: torch.Tensor | None = DRAFTQ
        else:
            draft, q = [1, 3], None  # a lookup draft: fixed tokens
        n, nxt = verify(TARGET, draft, SAMPLING, q, gen)  # type: ignore[operator]
        emitted = [*draft[:n], nxt]
        first.append(emitted[0])
        if emitted[0] == draft[0] and len(emitted) > 1:  # target row 1 is p given that first token
            second.append(emitted[1])
    return first, second


@pytest.mark.parametrize("model_draft", [False, True], ids=["lookup", "draft-model"])
def test_speculative_sampling_keeps_the_target_distribution(model_draft: bool) -> None:
    p = torch.softmax(TARGET, -1)
    first, second = first_two(verify_sampling, 4000, model_draft)
    assert chi_square(first, p[0]) < CRITICAL
    assert len(second) > 400
    assert chi_square(second, p[1]) < CRITICAL


@pytest.mark.parametrize("model_draft", [False, True], ids=["lookup", "draft-model"])
def test_the_distribution_check_catches_resampling_from_p_after_a_rejection(model_draft: bool) -> None:
    """The classic mistake (a rejected draft redrawn from p, not from the residual) must fail."""
    def from_p(logits: torch.Tensor, draft: list[int], sampling: SamplingParams, q: torch.Tensor | None,
               gen: torch.Generator) -> tuple[int, int]:
        n, _ = verify_sampling(logits, draft, sampling, q, gen)
        return n, int(torch.multinomial(torch.softmax(logits[n], -1), 1, generator=gen))

    first, _ = first_two(from_p, 4000, model_draft)
    assert chi_square(first, torch.softmax(TARGET[0], -1)) > CRITICAL


def test_greedy_verification_keeps_the_matching_prefix() -> None:
    logits = torch.zeros(4, V)
    for row, best in enumerate([2, 5, 1, 4]):
        logits[row, best] = 1.0
    assert verify_greedy(logits, [2, 5, 3]) == (2, 1)
    assert verify_greedy(logits, [2, 5, 1]) == (3, 4)
    assert verify_greedy(logits, [0, 5, 1]) == (0, 2)


def test_sampled_speculative_generation_is_reproducible_and_valid() -> None:
    engine = Engine(make_tiny(0), torch.device("cpu"), draft_model=make_tiny(5))
    params = SamplingParams(temperature=0.8, top_k=40)
    for spec in (LOOKUP, DRAFT):
        a = engine.generate(request(REPEATING, 16, spec, sampling=params, seed=7))
        b = engine.generate(request(REPEATING, 16, spec, sampling=params, seed=7))
        assert a.tokens == b.tokens and len(a.tokens) == 16
    assert a.verify_steps > 0  # the draft model always drafts


def test_draft_speculation_without_a_draft_model_is_refused() -> None:
    with pytest.raises(ValueError, match="no draft model"):
        Engine(make_tiny(0), torch.device("cpu")).generate(request(PLAIN, 4, DRAFT))


def test_a_batch_decodes_without_speculation_and_a_lone_request_with_it() -> None:
    # the batch path (the team server's scheduler) never speculates; its outputs equal batch-1
    # decoding: tests/remote/test_scheduler.py
    assert not should_speculate(LOOKUP, 2) and should_speculate(LOOKUP, 1)
    engine = Engine(make_tiny(0), torch.device("cpu"))
    plain = engine.generate(request(REPEATING, 12)).tokens
    alone = engine.generate(request(REPEATING, 12, LOOKUP))
    assert alone.tokens == plain and alone.verify_steps > 0
