"""Our tokenizer as other runtimes spell it: a Hugging Face tokenizer.json and llama.cpp's GGUF vocabulary.

tiktoken merges the adjacent pair whose *merged token* has the lowest rank; Hugging Face BPE (and
llama.cpp) apply an explicit list of *merges* by their own rank. The usual bridge, used for GPT-2
and Qwen: for each multi-byte token in rank order, run BPE on its bytes with the lower ranks only;
the last pair merged is that token's merge, at that token's rank.

The same derivation covers our runs of 2-24 spaces. Their ranks sit above all of GPT-2's and no
GPT-2 token holds two spaces, so once no GPT-2 merge is left a piece's single spaces merge among
themselves only, shortest resulting run first (leftmost on a tie); the pairs that process uses on
a run of any length are the ones it uses to build each run of up to 24 (16 + 13 for 29 spaces,
13 from 8 + 5, 8 from 4 + 4, ...), which is what the derivation lists. Checked by simulating runs
of 1-1000 spaces, and tested on the standard library and whitespace-heavy text
(tests/model/test_tokenizer_export.py).
"""

from __future__ import annotations

import functools
from typing import Any

from codeassist.model.hf_tokenizer import byte_to_unicode
from codeassist.model.tokenizer import (
    EOT,
    EOT_ID,
    FIM_MIDDLE,
    FIM_MIDDLE_ID,
    FIM_PREFIX,
    FIM_PREFIX_ID,
    FIM_SUFFIX,
    FIM_SUFFIX_ID,
    MAX_SPACE_RUN,
    N_GPT2,
    VOCAB_SIZE,
    TokenizerError,
    get_encoding,
)

SPECIALS: dict[int, str] = {EOT_ID: EOT, FIM_PREFIX_ID: FIM_PREFIX, FIM_MIDDLE_ID: FIM_MIDDLE,
                            FIM_SUFFIX_ID: FIM_SUFFIX}
# llama.cpp's token types (gguf.TokenType): NORMAL, CONTROL, UNUSED
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_UNUSED = 1, 3, 5


def byte_level(token: bytes) -> str:
    """The token's string in a byte-level vocabulary (b' def' -> 'Ġdef')."""
    table = byte_to_unicode()
    return "".join(table[b] for b in token)


def _ranks() -> dict[bytes, int]:
    enc = get_encoding()
    return {enc.decode_single_token_bytes(i): i for i in range(N_GPT2 + MAX_SPACE_RUN - 1) if i != EOT_ID}


def _last_merge(ranks: dict[bytes, int], token: bytes, max_rank: int) -> tuple[bytes, bytes]:
    """BPE on `token`'s bytes with ranks below max_rank, stopped at two parts."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best: tuple[int, int] | None = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            raise ValueError(f"token {token!r} cannot be built from lower ranks")
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts[0], parts[1]


@functools.cache
def merges() -> tuple[tuple[str, str], ...]:
    """The ordered merge list (byte-level strings) that reproduces tiktoken's segmentation."""
    ranks = _ranks()
    out: list[tuple[str, str]] = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) > 1:
            left, right = _last_merge(ranks, token, rank)
            out.append((byte_level(left), byte_level(right)))
    return tuple(out)


def tokens() -> list[str]:
    """Token strings by id for the real vocabulary (0 .. 50282): byte-level text, or the special's name."""
    enc = get_encoding()
    return [SPECIALS[i] if i in SPECIALS else byte_level(enc.decode_single_token_bytes(i))
            for i in range(FIM_SUFFIX_ID + 1)]


def build_hf_tokenizer() -> Any:
    """A `tokenizers.Tokenizer` that gives our ids for every text (special strings become specials)."""
    try:
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    except ImportError:
        raise TokenizerError("writing tokenizer.json needs the 'tokenizers' package "
                             "(pip install tokenizers)") from None

    vocab = {tok: i for i, tok in enumerate(tokens())}
    bpe = models.BPE(vocab=vocab, merges=list(merges()), fuse_unk=False, byte_fallback=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.add_special_tokens([AddedToken(SPECIALS[i], special=True, normalized=False)
                            for i in sorted(SPECIALS)])
    return tok


def hf_tokenizer_files(model_max_length: int) -> dict[str, str]:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json, as file name -> text."""
    import json

    fim = [FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX]
    specials = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT, "additional_special_tokens": fim}
    config = {
        # the generic fast class loads tokenizer.json as written, in transformers 4 and 5 alike
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {str(i): {"content": s, "special": True, "normalized": False,
                                          "lstrip": False, "rstrip": False, "single_word": False}
                                 for i, s in sorted(SPECIALS.items())},
        **specials,
    }
    return {
        "tokenizer.json": build_hf_tokenizer().to_str(pretty=False),
        "tokenizer_config.json": json.dumps(config, indent=2),
        "special_tokens_map.json": json.dumps(specials, indent=2),
    }


def gguf_vocab() -> tuple[list[str], list[int], list[str]]:
    """(tokens, token types, merges) padded to the embedding's VOCAB_SIZE rows, as llama.cpp needs."""
    toks = tokens()
    types = [TOKEN_CONTROL if i in SPECIALS else TOKEN_NORMAL for i in range(len(toks))]
    for i in range(len(toks), VOCAB_SIZE):
        toks.append(f"[PAD{i}]")
        types.append(TOKEN_UNUSED)
    return toks, types, [f"{a} {b}" for a, b in merges()]
