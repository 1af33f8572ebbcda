"""Our tokenizer rebuilt for HF `tokenizers` (and llama.cpp) gives exactly our ids."""

from __future__ import annotations

import functools
import random
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from codeassist.model import tokenizer as ours
from codeassist.model import tokenizer_export as tx


@functools.cache
def hf() -> Any:
    return tx.build_hf_tokenizer()


def hf_ids(texts: list[str]) -> list[list[int]]:
    return [e.ids for e in hf().encode_batch(texts, add_special_tokens=False)]


def stdlib_top_level() -> list[Path]:
    """Every .py file at the top of the standard library (the brief's sample)."""
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


def read(paths: list[Path]) -> list[str]:
    return [p.read_text("utf-8", errors="replace") for p in paths]


def assert_same_ids(texts: list[str]) -> None:
    expected = [ours.get_encoding().encode(t, allowed_special="all") for t in texts]
    for text, want, got in zip(texts, expected, hf_ids(texts), strict=True):
        assert got == want, f"differs on {text[:80]!r}"


def whitespace_cases() -> list[str]:
    cases = []
    for n in range(1, 61):  # indentation runs around the 24-space limit and past it
        cases += [" " * n, " " * n + "x", "\n" + " " * n + "return x", "\t" * (n % 5) + " " * n + "y",
                  "x" + " " * n + "\n", "a = 1" + " " * n + "# c", "\r\n" + " " * n + "\r\n" + " " * n + "z",
                  "\n\n" + " " * n + "\t" + " " * n + "w"]
    rng = random.Random(0)
    alphabet = [" ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2003", "\x0b", "\x0c", "\u2028",
                "x", "é", "日本", "🎉", "#", "'s", "1", ":", "<|endoftext|>", "<|fim_middle|>"]
    for _ in range(1500):
        cases.append("".join(rng.choice(alphabet) * rng.choice([1, 1, 2, 3, 5, 9, 17, 25, 30])
                             for _ in range(rng.randint(1, 20))))
    return cases


def test_a_standard_library_sample_tokenizes_exactly_as_ours() -> None:
    files = stdlib_top_level()
    assert len(files) > 100
    texts = read(files[::12])  # 1 in 12: a fast sample of the full check below
    assert sum(map(len, texts)) > 200_000
    assert_same_ids(texts)


@pytest.mark.slow
def test_the_whole_standard_library_top_level_tokenizes_exactly_as_ours() -> None:
    assert_same_ids(read(stdlib_top_level()))


def test_whitespace_heavy_text_tokenizes_exactly_as_ours() -> None:
    cases = whitespace_cases()
    assert_same_ids(cases)
    for text, ids in zip(cases, hf_ids(cases), strict=True):
        assert hf().decode(ids, skip_special_tokens=False) == text


def test_space_runs_of_any_length_split_as_ours() -> None:
    # past 24 spaces tiktoken splits by rank (29 spaces: 16 + 13); the merges must find the same split
    text = " " * 30 + "x"
    want = ours.encode(text)
    assert [len(ours.token_bytes(i)) for i in want] == [16, 13, 2]
    assert hf_ids([text]) == [want]
    assert_same_ids([" " * n for n in range(1, 301)] + ["\n" + " " * n + "pass" for n in range(1, 301)])


def test_special_strings_become_our_special_ids() -> None:
    text = "<|fim_suffix|>x<|fim_prefix|>def f():<|fim_middle|>pass<|endoftext|>"
    ids = hf_ids([text])[0]
    assert ids[0] == ours.FIM_SUFFIX_ID and ours.FIM_PREFIX_ID in ids and ours.FIM_MIDDLE_ID in ids
    assert ids[-1] == ours.EOT_ID


def test_token_strings_are_our_token_bytes() -> None:
    table = {v: k for k, v in tx.byte_to_unicode().items()}
    toks = tx.tokens()
    assert len(toks) == ours.FIM_SUFFIX_ID + 1
    for i in [*range(0, ours.FIM_SUFFIX_ID + 1, 97), *range(ours.N_GPT2, ours.FIM_PREFIX_ID)]:
        if i == ours.EOT_ID:
            continue
        assert bytes(table[c] for c in toks[i]) == ours.token_bytes(i)
    assert [toks[i] for i in sorted(tx.SPECIALS)] == [ours.EOT, ours.FIM_PREFIX, ours.FIM_MIDDLE,
                                                       ours.FIM_SUFFIX]


def test_gguf_vocab_is_padded_to_the_embedding() -> None:
    tokens, types, merges = tx.gguf_vocab()
    assert len(tokens) == len(types) == ours.VOCAB_SIZE
    assert tokens[-1] == f"[PAD{ours.VOCAB_SIZE - 1}]" and types[-1] == tx.TOKEN_UNUSED
    assert types[ours.EOT_ID] == types[ours.FIM_MIDDLE_ID] == tx.TOKEN_CONTROL
    assert types[ours.N_GPT2] == tx.TOKEN_NORMAL  # two spaces: ordinary text
    # one merge per token of two or more bytes: GPT-2's 50,000 and one per space run
    assert len(merges) == len(tx.merges()) == (ours.N_GPT2 - 1 - 256) + (ours.MAX_SPACE_RUN - 1)
