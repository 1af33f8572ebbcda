"""Fill-in-the-middle training samples (Bavarian et al., 2022), character-level spans.

The layout itself comes from the model's tokenizer (`Tokenizer.fim_ids`, the function the
language server also uses, so training and serving can never disagree): ours lays samples out
with `build_fim_ids` in both orders, an open family's (Qwen2.5-Coder, StarCoder, DeepSeek) in its
own template's markers. A tokenizer without a FIM template gets left-to-right samples only.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from codeassist.model.tokenization import Tokenizer

FIM_RATE = 0.5  # share of samples turned into FIM
SPM_RATE = 0.5  # share of FIM samples in suffix-prefix-middle order (the order the server uses)


def fim_sample(text: str, rng: random.Random, fim_rate: float = FIM_RATE,
               spm_rate: float = SPM_RATE, tokenizer: Tokenizer | None = None) -> list[int]:
    """Token ids for one training document in `tokenizer` (None: ours), ending in its end of text.

    With probability `fim_rate` the text is cut at two random character positions into
    prefix / middle / suffix and laid out by the tokenizer's `fim_ids` (PSM or SPM, drawn);
    otherwise it is left to right, after the BOS of a model that wants one. Ours draws and lays
    out exactly as before families (the same ids for the same seed).
    """
    from codeassist.model.tokenization import resolve

    tok = resolve(tokenizer)
    if tok.fim and len(text) >= 2 and rng.random() < fim_rate:
        a, b = sorted((rng.randrange(len(text) + 1), rng.randrange(len(text) + 1)))
        prefix, middle, suffix = text[:a], text[a:b], text[b:]
        ids = tok.fim_ids(tok.encode(prefix), tok.encode(suffix), tok.encode(middle), spm=rng.random() < spm_rate)
    else:
        ids = ([tok.bos_id] if tok.bos_id is not None else []) + tok.encode(text)
    ids.append(tok.eot_id)
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
