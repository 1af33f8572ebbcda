"""Token shards: flat uint16 or uint32 files (memory-mapped for training) and a manifest with hashes.

A shard is uint16 when every id of the model's tokenizer fits (ours, StarCoder's 49,152), uint32
otherwise (Qwen2.5's 151,936, Llama 3's 128,256); each manifest entry records its dtype and
`load_split` maps the file with it (entries written before the field existed are uint16).
"""

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
from typing import TYPE_CHECKING

import numpy as np

from codeassist.training.fim import FIM_RATE, fim_sample, split_into_chunks

if TYPE_CHECKING:
    from codeassist.model.tokenization import Tokenizer

MANIFEST = "manifest.json"
CHUNK_CHARS = 3000  # about one 1024-token window of code with the whitespace tokens


@dataclass(frozen=True)
class Document:
    path: str  # stable name (relative path), used for the seed and the split
    text: str


_WORKER_TOKENIZER: Tokenizer | None = None  # a tokenizing process's tokenizer (set by _init_worker)


def _init_worker(meta: dict[str, str] | None) -> None:
    """A pool process rebuilds the tokenizer from its metadata once (None: ours)."""
    global _WORKER_TOKENIZER
    from codeassist.model.tokenization import tokenizer_from_metadata

    _WORKER_TOKENIZER = None if meta is None else tokenizer_from_metadata(meta)


def shard_dtype(tokenizer: Tokenizer | None) -> np.dtype:
    """uint16 when every id of `tokenizer` (None: ours) is below 65,536, else uint32."""
    from codeassist.model.tokenization import resolve

    tok = resolve(tokenizer)
    top = max([tok.n_vocab - 1, tok.eot_id, *(i for i in (tok.bos_id,) if i is not None), *tok.special_ids()])
    return np.dtype(np.uint16 if top < 65536 else np.uint32)


def document_ids(path: str, text: str, seed: int = 0, fim_rate: float = 0.0, fim_pass: int = 0,
                 tokenizer: Tokenizer | None = None) -> list[int]:
    """One document's ids as a shard holds them (chunks, each ending in end of text)."""
    # per-document seed: output independent of worker order; each pass draws its own FIM spans
    rng = random.Random(f"{seed}:{path}" if fim_pass == 0 else f"{seed}:{fim_pass}:{path}")
    ids: list[int] = []
    for chunk in split_into_chunks(text, CHUNK_CHARS):
        ids.extend(fim_sample(chunk, rng, fim_rate=fim_rate, tokenizer=tokenizer))
    return ids


def _document_ids(args: tuple[str, str, int, float, int]) -> list[int]:
    return document_ids(*args, tokenizer=_WORKER_TOKENIZER)


def write_split(docs: Sequence[Document], out_dir: Path, split: str, seed: int = 0,
                fim_rate: float = FIM_RATE, workers: int = 2, progress: bool = False,
                passes: int = 1, tokenizer: Tokenizer | None = None) -> dict[str, object]:
    """Tokenize `docs` (in order) into `out_dir/{split}.bin` with `tokenizer` (None: ours);
    returns its manifest entry.

    With `passes` > 1 the documents are written that many times, each pass with its own FIM
    spans, so that several epochs over a small project do not repeat one FIM sample per chunk.
    """
    from codeassist.model.tokenization import resolve

    dtype = shard_dtype(tokenizer)
    meta = resolve(tokenizer).to_metadata() if tokenizer is not None else None
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{split}.bin"
    tmp = path.with_suffix(".bin.tmp")
    sha = hashlib.sha256()
    n_tokens = 0
    jobs = [(d.path, d.text, seed, fim_rate, p) for p in range(passes) for d in docs]
    from tqdm import tqdm  # a progress bar on stderr

    bar = tqdm(total=len(jobs), desc=f"tokenize {split}", unit="file", disable=not progress, file=sys.stderr)
    with open(tmp, "wb") as f, ProcessPoolExecutor(max_workers=max(1, workers), initializer=_init_worker,
                                                  initargs=(meta,)) as pool:
        for ids in pool.map(_document_ids, jobs, chunksize=8):
            arr = np.asarray(ids, dtype=np.int64)
            if len(arr) and int(arr.max()) > np.iinfo(dtype).max:  # shard_dtype covers every id
                raise ValueError(f"token id {int(arr.max())} does not fit a {dtype.name} shard")
            arr = arr.astype(dtype)
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
            "passes": passes, "files": sorted(d.path for d in docs), "dtype": dtype.name}


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


def split_dtype(out_dir: Path, split: str) -> np.dtype:
    """The dtype the manifest records for `split` (uint16 when it records none)."""
    try:
        entry = read_manifest(out_dir)["splits"][split]  # type: ignore[index]
    except (OSError, ValueError, KeyError, TypeError):
        return np.dtype(np.uint16)
    name = entry.get("dtype", "uint16") if isinstance(entry, dict) else "uint16"
    if name not in ("uint16", "uint32"):
        raise ValueError(f"the shard {split}.bin has an unknown dtype {name!r} in its manifest")
    return np.dtype(name)


def load_split(out_dir: Path, split: str) -> np.memmap:
    return np.memmap(out_dir / f"{split}.bin", dtype=split_dtype(out_dir, split), mode="r")


