"""Copy candidates: the index finds how the code went on elsewhere; the engine takes one only
when the model agrees, and then decodes exactly as if the candidate had been in the prompt."""

import numpy as np
import pytest
import torch

from codeassist.model import tokenizer as tok
from codeassist.model.copy import CopyIndex, find_candidates
from codeassist.model.engine import CopyParams, Engine, GenerationRequest, StopRules
from tests.conftest import make_tiny

DOC = ("def area(self):\n    return self.width * self.height\n\n"
       "def perimeter(self):\n    return 2 * (self.width + self.height)\n\n"
       "def scaled(self, k):\n    return Rect(self.width * k, self.height * k)\n")


def test_the_longest_match_wins_and_its_rest_of_line_is_returned() -> None:
    index = CopyIndex([tok.encode(DOC)])
    context = tok.encode("x = 1\n\ndef area(self):\n    return")
    found = find_candidates([(index, None)], context, " self")
    assert [c.text for c in found] == [" self.width * self.height"]
    assert found[0].count == 1 and found[0].match_chars >= len("(self):\n    return")


def test_candidates_must_spell_out_the_typed_text_and_are_ranked_by_count() -> None:
    index = CopyIndex([tok.encode("y = 0\nx = compute(a)\ny = 0\nx = compute(b)\ny = 0\nx = compute(b)\n")])
    context = tok.encode("y = 0\nx = compute")
    assert [c.text for c in find_candidates([(index, None)], context, "(")] == ["(b)", "(a)"]
    assert find_candidates([(index, None)], context, "[") == []  # nothing went on with "["


def test_dead_positions_and_segment_borders_never_match() -> None:
    a, b = tok.encode("a = 1\nfirst = value_one\n"), tok.encode("a = 1\nfirst = value_two\n")
    index = CopyIndex([a, b])
    context = tok.encode("a = 1\nfirst =")
    assert {c.text for c in find_candidates([(index, None)], context, "")} == {" value_one", " value_two"}
    dead = np.zeros(index.n_tokens, dtype=bool)
    dead[:len(a)] = True  # the first file changed since it was indexed
    assert [c.text for c in find_candidates([(index, dead)], context, "")] == [" value_two"]
    joined = CopyIndex([tok.encode("end of one"), tok.encode(" file two\n")])
    assert find_candidates([(joined, None)], tok.encode("end of one"), "") == []


def _request(prompt: list[int], copy: CopyParams, forced: str = "", n: int = 12) -> GenerationRequest:
    return GenerationRequest(prompt=tuple(prompt), forced_prefix=forced.encode(), copy=copy,
                             stop=StopRules(max_new_tokens=n, stop_on_eos=False))


PROMPT = [tok.EOT_ID, *tok.encode("def area(self):\n    return self.width * self.height\n\ndef area2(self):\n   ")]


def test_no_candidates_or_a_refused_one_gives_exactly_todays_tokens() -> None:
    plain = Engine(make_tiny(0), torch.device("cpu")).generate(_request(PROMPT, CopyParams(), " "))
    refused = Engine(make_tiny(0), torch.device("cpu")).generate(
        _request(PROMPT, CopyParams((" return self.width * self.height",), min_logprob=float("inf")), " "))
    assert refused.tokens == plain.tokens and refused.copied is None
    assert len(refused.copy_scores) == 1 and np.isfinite(refused.copy_scores[0])


@pytest.mark.parametrize("order", [1, -1])
def test_a_taken_candidate_is_the_line_and_the_next_keystroke_reuses_it_exactly(order: int) -> None:
    """Either order: once the taken candidate is scored last, once it must be scored again."""
    candidates = (" x", " return self.width * self.height")[::order]
    engine = Engine(make_tiny(1), torch.device("cpu"))
    engine.generate(_request(PROMPT[:-3], CopyParams(), n=2))  # a cache holding an older prompt
    took = engine.generate(_request(PROMPT, CopyParams(candidates, min_logprob=-1e9), " ", n=20))
    best = candidates[max(range(2), key=lambda i: took.copy_scores[i])]
    assert took.copied == best and took.text == best and took.stop_reason == "stop"
    assert took.tokens == tok.encode(best + "\n")[:-1]
    # the user accepts it and goes on: the cache's keys and values for the line are reused
    nxt = [*PROMPT, *took.tokens, *tok.encode("\n")]
    warm = engine.generate(_request(nxt, CopyParams(), n=8))
    assert warm.reused_tokens == len(PROMPT) + len(took.tokens)
    cold = Engine(make_tiny(1), torch.device("cpu")).generate(_request(nxt, CopyParams(), n=8))
    assert warm.tokens == cold.tokens
    full = [*nxt, *warm.tokens]
    with torch.inference_mode():  # exactly: the logits after the reused slots equal a fresh pass
        cached = engine.score_tokens(full[-1:], len(full) - 1)[-1]
        fresh = Engine(make_tiny(1), torch.device("cpu"))
        fresh._ensure_cache(1)
        assert torch.allclose(cached, fresh.score_tokens(full, 0)[-1], atol=1e-5)


def test_a_candidate_the_model_scores_low_is_not_taken() -> None:
    engine = Engine(make_tiny(2), torch.device("cpu"))
    good, bad = " return self.width * self.height", " ) ) ] ] } }"
    scores = engine.generate(_request(PROMPT, CopyParams((good, bad), min_logprob=float("inf")), " ")).copy_scores
    low, high = sorted(scores)
    between = (low + high) / 2
    result = engine.generate(_request(PROMPT, CopyParams((good, bad), min_logprob=between), " "))
    assert result.copied == (good, bad)[scores.index(high)]
    none = engine.generate(_request(PROMPT, CopyParams((good, bad), min_logprob=high + 1e-3), " "))
    assert none.copied is None


def test_a_candidate_that_does_not_spell_out_the_typed_text_is_never_scored_or_taken() -> None:
    engine = Engine(make_tiny(0), torch.device("cpu"))
    result = engine.generate(_request(PROMPT, CopyParams(("return x",), min_logprob=-1e9), " "))
    assert result.copied is None and result.copy_scores == (float("-inf"),)


def test_without_the_eos_stop_no_special_or_padding_id_is_ever_chosen() -> None:
    model = make_tiny(3)
    first = Engine(make_tiny(3), torch.device("cpu")).generate(_request(PROMPT, CopyParams(), n=1)).tokens[0]
    with torch.no_grad():  # end-of-text and the padding ids: three times the favourite's logit
        model.lm_head.weight[tok.FIM_PREFIX_ID:] = 3 * model.lm_head.weight[first]
        model.lm_head.weight[tok.EOT_ID] = 3 * model.lm_head.weight[first]
    result = Engine(model, torch.device("cpu")).generate(_request(PROMPT, CopyParams(), n=6))
    assert len(result.tokens) == 6 and all(t < tok.EOT_ID for t in result.tokens)


def test_in_the_document_a_match_counts_in_characters_whatever_the_tokens() -> None:
    from codeassist.model.copy import find_in_text

    # " extensions:" and "request.extensions:" tokenize differently; as text they match
    text = ('if "t" not in extensions:\n            timeout = (\n                1\n            )\n'
            'if "t" not in request.extensions:\n            ')
    found = find_in_text(text, len(text), "            ")
    assert [c.text for c in found] == ["            timeout = ("]
    own = "q = 0\nvalue_one = 1\n"
    assert find_in_text(own, own.index(" = 1"), "") == []  # the cursor's own text never answers
