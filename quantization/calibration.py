"""Calibration and evaluation text: the standard library split, or the user's own code.

GPTQ calibrates on samples laid out as in training (the same FIM transform), because that is
what the model sees when it serves. Held-out perplexity uses the validation files, left to right.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from codeassist.training.fim import fim_sample, split_into_chunks
from codeassist.training.shards import CHUNK_CHARS, Document
from codeassist.training.stdlib import split_documents, stdlib_documents

CODE_SUFFIXES = frozenset({
    ".py", ".pyi", ".js", ".jsx", ".ts", ".tsx", ".go", ".rs", ".java", ".kt", ".c", ".h", ".cc", ".cpp",
    ".hpp", ".cs", ".rb", ".php", ".swift", ".scala", ".lua", ".sh", ".sql", ".m", ".r", ".jl", ".zig",
})
SKIP_DIRS = frozenset({"node_modules", "__pycache__", "venv", "build", "dist", "target", "site-packages"})
MAX_FILE_BYTES = 1 << 20


def stdlib_split(validation: bool) -> list[Document]:
    train, val = stdlib_splits()
    return val if validation else train


def stdlib_splits() -> tuple[list[Document], list[Document]]:
    """(training files, validation files) of the standard library, split as training splits them."""
    return split_documents(stdlib_documents())


def collect_documents(paths: Sequence[Path]) -> list[Document]:
    """Source files under `paths` (files are taken as given; folders are walked for code files)."""
    docs: list[Document] = []
    for root in paths:
        files = [root] if root.is_file() else sorted(_walk(root))
        for p in files:
            try:
                if p.stat().st_size > MAX_FILE_BYTES:
                    continue
                text = p.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if text.strip():
                docs.append(Document(path=str(p), text=text))
    return docs


def _walk(root: Path) -> Iterable[Path]:
    for p in root.rglob("*"):
        rel = p.relative_to(root).parts
        if any(part.startswith(".") or part in SKIP_DIRS for part in rel[:-1]):
            continue
        if p.suffix.lower() in CODE_SUFFIXES and p.is_file() and not p.is_symlink():
            yield p


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
