"""Fill-in-the-middle training samples (Bavarian et al., 2022), character-level spans.

The layout itself comes from `codeassist.model.tokenizer.build_fim_ids`, the one function the
language server also uses, so training and serving can never disagree.
"""

from __future__ import annotations

import random

from codeassist.model.tokenizer import EOT_ID, build_fim_ids, encode

FIM_RATE = 0.5  # share of samples turned into FIM
SPM_RATE = 0.5  # share of FIM samples in suffix-prefix-middle order (the order the server uses)


def fim_sample(text: str, rng: random.Random, fim_rate: float = FIM_RATE,
               spm_rate: float = SPM_RATE) -> list[int]:
    """Token ids for one training document, ending in <|endoftext|>.

    With probability `fim_rate` the text is cut at two random character positions into
    prefix / middle / suffix and laid out by `build_fim_ids`; otherwise it is left to right.
    """
    if len(text) >= 2 and rng.random() < fim_rate:
        a, b = sorted((rng.randrange(len(text) + 1), rng.randrange(len(text) + 1)))
        prefix, middle, suffix = text[:a], text[a:b], text[b:]
        ids = build_fim_ids(encode(prefix), encode(suffix), encode(middle), spm=rng.random() < spm_rate)
    else:
        ids = encode(text)
    ids.append(EOT_ID)
    return ids


def split_into_chunks(text: str, max_chars: int) -> list[str]:
    """Split at line boundaries into pieces of at most about `max_chars` characters.

    FIM is applied per chunk so that most samples fit one context window: a whole-file FIM
    sample puts the middle thousands of tokens away from its prefix.
    """
    if len(text) <= max_chars:
        return [text]
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + max_chars)
        if end < len(text):
            cut = text.rfind("\n", start + max_chars // 2, end)
            end = cut + 1 if cut != -1 else end
        chunks.append(text[start:end])
        start = end
    return chunks
