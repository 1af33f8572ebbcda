import random
import sysconfig
from pathlib import Path

import pytest

from codeassist.model import tokenizer as tok


def stdlib_sample(n: int = 60) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if "site-packages" not in p.parts)
    texts = []
    for p in random.Random(0).sample(files, n):
        try:
            texts.append(p.read_text("utf-8"))
        except UnicodeDecodeError:
            continue
    return texts


def test_round_trips_a_sample_of_the_standard_library() -> None:
    texts = stdlib_sample()
    assert len(texts) > 40
    for text in texts:
        assert tok.decode(tok.encode(text)) == text


def test_round_trips_unicode_and_special_token_text() -> None:
    text = "naïve = '日本語 🎉'\n\t\t<|endoftext|> <|fim_prefix|>\r\n" + " " * 40 + "x"
    ids = tok.encode(text)
    assert tok.EOT_ID not in ids and tok.FIM_PREFIX_ID not in ids  # text, never control tokens
    assert tok.decode(ids) == text


def test_gpt2_ids_are_unchanged() -> None:
    # GPT-2 weights must keep their meaning: ids below 50257 are exactly GPT-2's
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" ") == [220]
    assert tok.token_bytes(tok.EOT_ID) == b"<|endoftext|>"


@pytest.mark.parametrize("n", [2, 3, 8, 24])
def test_each_run_of_spaces_is_one_token(n: int) -> None:
    ids = tok.encode(" " * n + "\n")
    assert ids[0] == tok.N_GPT2 + n - 2
    assert tok.token_bytes(ids[0]) == b" " * n


def test_indentation_costs_fewer_tokens_than_gpt2() -> None:
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    gpt2 = tiktoken.Encoding(name="gpt2-plain", pat_str=tok.GPT2_PATTERN,
                             mergeable_ranks=load_tiktoken_bpe(tok._ranks_path()), special_tokens={})
    code = "class A:\n    def f(self):\n        if x:\n            return 1\n"
    ours, theirs = tok.encode(code), gpt2.encode_ordinary(code)
    assert len(ours) < len(theirs) - 10  # 3 + 7 + 11 indentation spaces were one token each in GPT-2
    assert 220 not in ours  # every indentation run became a single space-run token


def test_special_ids_and_padded_vocabulary() -> None:
    assert (tok.FIM_PREFIX_ID, tok.FIM_MIDDLE_ID, tok.FIM_SUFFIX_ID) == (50280, 50281, 50282)
    assert tok.VOCAB_SIZE % 64 == 0 and tok.VOCAB_SIZE > tok.FIM_SUFFIX_ID
    enc = tok.get_encoding()
    assert enc.n_vocab == tok.FIM_SUFFIX_ID + 1


def test_fim_layouts() -> None:
    p, s, m = [1, 2], [3], [4, 5]
    assert tok.build_fim_ids(p, s, m, spm=True) == [tok.FIM_SUFFIX_ID, 3, tok.FIM_PREFIX_ID, 1, 2,
                                                     tok.FIM_MIDDLE_ID, 4, 5]
    assert tok.build_fim_ids(p, s, spm=False) == [tok.FIM_PREFIX_ID, 1, 2, tok.FIM_SUFFIX_ID, 3,
                                                  tok.FIM_MIDDLE_ID]


def test_damaged_ranks_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "gpt2.tiktoken"
    good = Path(tok._ranks_path()).read_bytes()
    bad.write_bytes(good[:-100] + b"X" * 100)
    monkeypatch.setattr(tok, "_ranks_path", lambda: str(bad))
    tok.get_encoding.cache_clear()
    try:
        with pytest.raises(tok.TokenizerError, match="damaged"):
            tok.get_encoding()
    finally:
        tok.get_encoding.cache_clear()
