"""Calibration and evaluation text: the standard library split, or the user's own code.

GPTQ calibrates on samples laid out as in training (the same FIM transform), because that is
what the model sees when it serves. Held-out perplexity uses the validation files, left to right.

This module is quantization's one door to training's corpus (the file collector, the standard
library split, chunks and FIM samples); the rest of the package imports it, never training.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import torch

from codeassist.training.fim import fim_sample, split_into_chunks
from codeassist.training.shards import CHUNK_CHARS, Document
from codeassist.training.stdlib import split_documents, stdlib_documents

__all__ = ["Document", "calibration_samples", "collect_documents", "stdlib_split", "stdlib_splits", "token_stream"]


def stdlib_split(validation: bool) -> list[Document]:
    train, val = stdlib_splits()
    return val if validation else train


def stdlib_splits() -> tuple[list[Document], list[Document]]:
    """(training files, validation files) of the standard library, split as training splits them."""
    return split_documents(stdlib_documents())


def collect_documents(paths: Sequence[Path]) -> list[Document]:
    """The user's code under `paths`, collected exactly as `codeassist train` collects it: git scope,
    secret files never opened, binary/minified/generated files dropped, secrets redacted, duplicates removed."""
    from codeassist.training.collect import collect

    return [Document(path=f.path, text=f.text) for f in collect(paths).files]


def token_stream(docs: Sequence[Document], max_tokens: int, fim_rate: float, seed: int = 0,
                 shuffle: bool = True) -> list[int]:
    """Documents as training lays them out (chunks, FIM at `fim_rate`, EOT after each), up to max_tokens."""
    order = list(docs)
    if shuffle:
        random.Random(seed).shuffle(order)
    ids: list[int] = []
    for doc in order:
        rng = random.Random(f"{seed}:{doc.path}")
        for chunk in split_into_chunks(doc.text, CHUNK_CHARS):
            ids.extend(fim_sample(chunk, rng, fim_rate=fim_rate))
        if len(ids) >= max_tokens:
            break
    return ids[:max_tokens]


def calibration_samples(docs: Sequence[Document], n_samples: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """(n, T) windows drawn at random from the documents (T shrinks if there is little text)."""
    if not docs:
        raise ValueError("no calibration text: no readable source files were found")
    ids = token_stream(docs, max_tokens=4 * n_samples * seq_len, fim_rate=0.5, seed=seed)
    T = min(seq_len, len(ids))
    gen = torch.Generator().manual_seed(seed)
    data = torch.tensor(ids, dtype=torch.long)
    starts = torch.randint(0, len(ids) - T + 1, (n_samples,), generator=gen)
    return torch.stack([data[s:s + T] for s in starts.tolist()])
