"""Token shards: flat uint16 files (memory-mapped for training) and a manifest with hashes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codeassist.model.tokenizer import VOCAB_SIZE
from codeassist.training.fim import FIM_RATE, fim_sample, split_into_chunks

MANIFEST = "manifest.json"
CHUNK_CHARS = 3000  # about one 1024-token window of code with the whitespace tokens


@dataclass(frozen=True)
class Document:
    path: str  # stable name (relative path), used for the seed and the split
    text: str


def _document_ids(args: tuple[str, str, int, float, int]) -> list[int]:
    path, text, seed, fim_rate, fim_pass = args
    # per-document seed: output independent of worker order; each pass draws its own FIM spans
    rng = random.Random(f"{seed}:{path}" if fim_pass == 0 else f"{seed}:{fim_pass}:{path}")
    ids: list[int] = []
    for chunk in split_into_chunks(text, CHUNK_CHARS):
        ids.extend(fim_sample(chunk, rng, fim_rate=fim_rate))
    return ids


def write_split(docs: Sequence[Document], out_dir: Path, split: str, seed: int = 0,
                fim_rate: float = FIM_RATE, workers: int = 2, progress: bool = False,
                passes: int = 1) -> dict[str, object]:
    """Tokenize `docs` (in order) into `out_dir/{split}.bin`; returns its manifest entry.

    With `passes` > 1 the documents are written that many times, each pass with its own FIM
    spans, so that several epochs over a small project do not repeat one FIM sample per chunk.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{split}.bin"
    tmp = path.with_suffix(".bin.tmp")
    sha = hashlib.sha256()
    n_tokens = 0
    jobs = [(d.path, d.text, seed, fim_rate, p) for p in range(passes) for d in docs]
    from tqdm import tqdm  # a progress bar on stderr

    bar = tqdm(total=len(jobs), desc=f"tokenize {split}", unit="file", disable=not progress, file=sys.stderr)
    with open(tmp, "wb") as f, ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for ids in pool.map(_document_ids, jobs, chunksize=8):
            arr = np.asarray(ids, dtype=np.uint16)
            assert VOCAB_SIZE <= 65536
            f.write(arr.tobytes())
            sha.update(arr.tobytes())
            n_tokens += len(arr)
            bar.update(1)
            bar.set_postfix_str(f"{n_tokens:,} tokens", refresh=False)
        bar.close()
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return {"file": path.name, "tokens": n_tokens, "sha256": sha.hexdigest(), "documents": len(docs),
            "passes": passes, "files": sorted(d.path for d in docs)}


def write_manifest(out_dir: Path, entries: dict[str, dict[str, object]], extra: dict[str, object]) -> None:
    data = {"splits": entries, **extra}
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, out_dir / MANIFEST)


def read_manifest(out_dir: Path) -> dict[str, object]:
    return json.loads((out_dir / MANIFEST).read_text())


def is_validation(path: str, val_fraction: float) -> bool:
    """Split by a hash of the path: stable across runs and machines, independent of file order."""
    h = int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big")
    return h / 2**64 < val_fraction


def load_split(out_dir: Path, split: str) -> np.memmap:
    return np.memmap(out_dir / f"{split}.bin", dtype=np.uint16, mode="r")


