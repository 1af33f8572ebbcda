"""No stray whitespace: after a healed space or line break the first token is one training
produces there, so a suggestion never begins with spaces the code does not have."""

import torch

from codeassist.model import tokenizer as tok
from codeassist.model.healing import PrefixConstraint, allowed_tokens


def test_after_a_healed_space_only_a_space_and_code_may_follow() -> None:
    allowed = [tok.token_bytes(i) for i in allowed_tokens(b" ")]
    assert b" return" in allowed and b" self" in allowed
    assert all(b[:1] == b" " and len(b) > 1 and not b[1:2].isspace() for b in allowed)
    assert b"  " not in allowed and b" \n" not in allowed and b" " not in allowed


def test_indentation_is_never_extended() -> None:
    for n in (2, 4, 8):
        allowed = {tok.token_bytes(i) for i in allowed_tokens(b" " * n)}
        assert allowed == {b" " * (n - 1)}  # then " " + code, by the rule above


def test_after_a_healed_line_break_the_next_token_is_not_indentation() -> None:
    c = PrefixConstraint(b"\n")
    newline = tok.encode("\n")[0]
    logits = torch.zeros(tok.VOCAB_SIZE)
    assert c.mask(logits)[newline] == 0
    c.advance(newline)
    assert not c.done  # one more rule: the token after the line break
    masked = c.mask(logits)
    run, word, eot = tok.encode("    ")[0], tok.encode("class")[0], tok.EOT_ID
    assert masked[run] == float("-inf") and masked[tok.encode("\t")[0]] == float("-inf")
    assert masked[word] == 0 and masked[eot] == 0
    c.advance(word)
    assert c.done and torch.equal(c.mask(logits), logits)


def test_a_token_that_goes_on_with_code_after_the_break_ends_the_rule() -> None:
    c = PrefixConstraint(b")\n")
    c.advance(tok.encode(")")[0])
    assert not c.done
    c.advance(tok.encode("\n")[0])
    assert not c.done
    c.advance(tok.encode("x")[0])
    assert c.done
