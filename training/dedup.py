"""Exact and near-duplicate removal for collected files.

Exact: sha256 of the cleaned text. Near: MinHash over 5-word shingles with datasketch's LSH
(the method of The Stack and CodeParrot), a candidate counted as a duplicate only when its
estimated Jaccard similarity to an earlier file reaches the threshold. Files are visited in the
order given and the first of each group is kept, so the result depends only on that order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

NUM_PERM = 128
SHINGLE = 5  # words per shingle
THRESHOLD = 0.85  # Jaccard similarity at or above which two files are near duplicates
SEED = 1  # MinHash permutations are seeded: the same input gives the same decisions everywhere

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class DedupResult:
    keep: tuple[int, ...]  # indices of the kept texts, in input order
    exact: tuple[int, ...]  # dropped as exact copies of an earlier text
    near: tuple[int, ...]  # dropped as near copies of an earlier text


def shingles(text: str, k: int = SHINGLE) -> set[bytes]:
    words = _WORD.findall(text)
    if len(words) < k:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + k]).encode() for i in range(len(words) - k + 1)}


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


def deduplicate(texts: Sequence[str], threshold: float = THRESHOLD, num_perm: int = NUM_PERM) -> DedupResult:
    from datasketch import MinHash, MinHashLSH  # imported here: the CLI's parser stays light

    seen: set[str] = set()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    sketches: dict[str, MinHash] = {}
    keep: list[int] = []
    exact: list[int] = []
    near: list[int] = []
    for i, text in enumerate(texts):
        h = content_hash(text)
        if h in seen:
            exact.append(i)
            continue
        seen.add(h)
        m = MinHash(num_perm=num_perm, seed=SEED)
        m.update_batch(sorted(shingles(text)))
        # LSH returns candidates that may be below the threshold; confirm each by its estimate
        if any(sketches[key].jaccard(m) >= threshold for key in sorted(lsh.query(m))):
            near.append(i)
            continue
        key = str(i)
        lsh.insert(key, m)
        sketches[key] = m
        keep.append(i)
    return DedupResult(tuple(keep), tuple(exact), tuple(near))
