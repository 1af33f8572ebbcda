"""Token healing keeps generation on tokenizations the model saw in training."""

from __future__ import annotations

import torch

from codeassist.model import tokenizer as tok
from codeassist.model.healing import PrefixConstraint, allowed_tokens


def _texts(rest: str) -> set[str]:
    return {tok.decode([i]) for i in allowed_tokens(rest.encode())}


def test_a_partial_word_may_be_completed_by_a_token_covering_it() -> None:
    allowed = _texts(" retur")
    assert " return" in allowed and " returned" in allowed
    # a lone space, or a shorter piece the encoder would never produce here, is refused
    assert " " not in allowed and " re" not in allowed and " r" not in allowed


def test_a_long_identifier_is_spelled_along_its_own_encoding() -> None:
    rest = "app_exceptio"
    assert _texts(rest) == {tok.decode(tok.encode(rest)[:1])}  # "app": no token covers it all
    assert _texts("exceptio") == {"except"}  # no token begins with it: then "io", or "ion", ...
    assert "return" in _texts("retur")


def test_indentation_allows_the_run_one_space_shorter_that_precedes_a_word() -> None:
    eight = " " * 8
    allowed = _texts(eight)
    assert " " * 7 in allowed  # "        return" encodes as 7 spaces + " return"
    assert eight not in allowed and " " * 9 not in allowed  # never more than the user typed
    assert " " * 3 not in allowed


def test_bytes_that_split_a_character_fall_back_to_byte_prefixes() -> None:
    real = [*range(tok.EOT_ID), *range(tok.N_GPT2, tok.FIM_PREFIX_ID)]
    # the second byte of a two-byte character, and the last two of a three-byte one
    for rest in ("é".encode()[1:], "漢".encode()[1:]):
        covering = {i for i in real if tok.token_bytes(i).startswith(rest)}
        shorter = {i for i in real if rest.startswith(tok.token_bytes(i)) and len(tok.token_bytes(i)) < len(rest)}
        (first_byte,) = [i for i in real if tok.token_bytes(i) == rest[:1]]  # every byte is a token
        assert first_byte in covering | shorter
        allowed = allowed_tokens(rest)
        assert len(allowed) == len(set(allowed)) and set(allowed) == covering | shorter


def test_constraint_masks_everything_else_and_advances() -> None:
    c = PrefixConstraint(b" retur")
    logits = torch.zeros(tok.VOCAB_SIZE)
    ret = tok.encode(" return")[0]
    space = tok.encode(" ")[0]
    masked = c.mask(logits)
    assert masked[ret] == 0 and masked[space] == float("-inf")
    c.advance(ret)
    assert c.done
