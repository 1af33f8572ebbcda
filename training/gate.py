"""The quality gate: is the new model measurably better than the user's current one?

Both models are scored on the held-out files of the user's own repositories:
- held-out loss: mean next-token loss over fixed windows of the validation shard (no FIM);
- line exact match: a line of a held-out file is cut at a seeded position, the rest of that
  line removed, and the completion asked for through the language server's own pipeline
  (`lsp.pipeline.Pipeline` with the local backend: the same context window, FIM prompt, token
  healing, stop rules and post-processing an editor gets). A hit is the suggestion equal to the
  removed text, ignoring trailing whitespace.

The new model wins if its loss is lower by at least MIN_LOSS_GAIN (relative) without losing
exact match, or its exact match is higher by at least MIN_EM_GAIN without a higher loss.

Each model is scored in its own tokenizer (ours, or the tokenizer.json an open family carries):
the validation shard when it was written in that tokenizer, else the held-out files tokenized
again. When the two models' tokenizers differ, per-token losses do not compare, so both losses
are per character of the held-out text.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from codeassist.model.tokenizer import TOKENIZER_NAME
from codeassist.training.collect import SourceFile

if TYPE_CHECKING:
    from codeassist.model.tokenization import Tokenizer

MIN_LOSS_GAIN = 0.01  # 1% lower held-out loss ...
MIN_EM_GAIN = 0.02  # ... or 2 points more lines completed exactly
LOSS_WINDOWS = 32
LOSS_SEQ = 512
_COMMENT_STARTS = ("#", "//", "/*", "*", '"""', "'''", "--")


@dataclass(frozen=True)
class LineSample:
    path: str
    language: str
    document: str  # the file with the rest of the sampled line removed
    offset: int  # the cursor, in code points
    expected: str  # the removed rest of the line


@dataclass(frozen=True)
class Score:
    loss: float
    exact_match: float  # 0..1
    lines: int


@dataclass(frozen=True)
class GateResult:
    new: Score
    old: Score
    better: bool
    summary: str  # one sentence: the decision and by how much


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


def line_samples(files: Sequence[SourceFile], n: int, seed: int = 0) -> list[LineSample]:
    """Up to `n` line-completion cases from `files`, the same ones for the same input."""
    cands: list[tuple[SourceFile, int, int]] = []  # file, line start, line end (exclusive of \n)
    for f in sorted(files, key=lambda f: f.path):
        pos = 0
        for line in f.text.split("\n"):
            body = line.strip()
            if len(body) >= 8 and not body.startswith(_COMMENT_STARTS):
                cands.append((f, pos, pos + len(line)))
            pos += len(line) + 1
    rng = random.Random(seed)
    rng.shuffle(cands)
    out = []
    for f, start, end in sorted(cands[:n], key=lambda c: (c[0].path, c[1])):
        line = f.text[start:end].rstrip()
        indent = len(line) - len(line.lstrip())
        cut = indent + _seed(seed, f.path, start) % max(1, len(line) - indent - 4)
        out.append(LineSample(path=f.path, language=f.language, document=f.text[:start + cut] + f.text[end:],
                              offset=start + cut, expected=line[cut:]))
    return out


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, tokens: np.ndarray, seq_len: int = LOSS_SEQ,
                 windows: int = LOSS_WINDOWS) -> float:
    """Mean token loss over up to `windows` evenly spaced, non-overlapping windows."""
    seq = min(seq_len, len(tokens) - 1)
    if seq < 1:
        return math.nan
    count = min(windows, (len(tokens) - 1) // seq)
    stride = (len(tokens) - 1) // count
    model.eval()
    total, n = 0.0, 0
    for k in range(count):
        s = k * stride
        x = torch.from_numpy(tokens[s:s + seq].astype(np.int64))[None]
        y = torch.from_numpy(tokens[s + 1:s + 1 + seq].astype(np.int64))[None]
        logits = model(x)
        total += float(torch.nn.functional.cross_entropy(logits.float()[0], y[0], reduction="sum"))
        n += seq
    return total / n


def exact_match(model_path: Path, samples: Sequence[LineSample], device: str = "cpu") -> float:
    """The share of `samples` the language server's pipeline completes exactly with this model."""
    hits = line_hits(model_path, samples, device)
    return sum(hits) / len(hits) if hits else math.nan


def line_hits(model_path: Path, samples: Sequence[LineSample], device: str = "cpu") -> list[bool]:
    """Per line: does the language server's pipeline with this model complete it exactly?"""
    if not samples:
        return []
    from codeassist.lsp.backends import LocalBackend
    from codeassist.lsp.settings import Settings

    threads = torch.get_num_threads()
    backend = LocalBackend(model=str(model_path), device=device, threads=threads)
    backend.start()
    try:
        if not backend.wait_ready(timeout=600):
            raise RuntimeError(f"the model {model_path} could not be loaded: {backend.status().reason}")
        # greedy, no cache (each case is a new document), and no time limit: a busy CPU must not
        # turn into a lower score
        settings = Settings(multiline="never", cache=False, debounce_ms=0, temperature=0.0,
                            time_budget_ms=30000)
        return asyncio.run(_line_hits(backend, settings, samples))
    finally:
        torch.set_num_threads(threads)


async def _count_hits(backend: object, settings: object, samples: Sequence[LineSample]) -> int:
    return sum(await _line_hits(backend, settings, samples))


async def _line_hits(backend: object, settings: object, samples: Sequence[LineSample]) -> list[bool]:
    from codeassist.lsp.context import build_context
    from codeassist.lsp.pipeline import Pipeline

    pipe = Pipeline(backend, settings)  # type: ignore[arg-type]
    hits: list[bool] = []
    try:
        for s in samples:
            ctx = build_context(f"file:///{s.path}", s.language, s.document, s.offset)
            result = await pipe.complete(ctx, invoked=True)  # the full time budget, not the typing one
            hits.append(result.text.rstrip() == s.expected.rstrip())
    finally:
        await backend.aclose()  # type: ignore[attr-defined]
    return hits


def model_tokenizer(model_path: Path) -> Tokenizer:
    """The tokenizer of a model file or Hugging Face folder, without loading its weights."""
    from codeassist.model.checkpoint import read_info
    from codeassist.model.tokenization import HFTokenizer, codeassist_tokenizer, tokenizer_from_metadata

    path = Path(model_path)
    if path.is_dir():
        from codeassist.model.families import family_of

        return codeassist_tokenizer() if family_of(path) == "gpt2" else HFTokenizer.from_folder(path)
    info = read_info(path)
    return tokenizer_from_metadata(info.meta or {"tokenizer": info.tokenizer})


def heldout_tokens(files: Sequence[SourceFile], tokenizer: Tokenizer) -> np.ndarray:
    """The held-out files in `tokenizer`, left to right, as the validation shard lays them out."""
    from codeassist.training.shards import document_ids

    ids = [i for f in files for i in document_ids(f.path, f.text, tokenizer=tokenizer)]
    return np.asarray(ids, dtype=np.int64)


def model_loss(model_path: Path, val_tokens: np.ndarray, val_files: Sequence[SourceFile] = (),
               val_tokenizer: str = TOKENIZER_NAME, per_char: bool = False) -> float:
    """The held-out loss of a model file or Hugging Face folder, in its own tokenizer.

    `val_tokens` (the validation shard, in tokenizer `val_tokenizer`) serves when the model's
    tokenizer is that one; else `val_files` are tokenized in the model's. `per_char`: the loss per
    character of the held-out files (models with different tokenizers compare so)."""
    from codeassist.model.engine import load_any
    from codeassist.training.dataset import tokenizer_identity

    model, _, _, tokenizer = load_any(model_path, "cpu", torch.float32)
    tokens = val_tokens
    if val_files and (per_char or tokenizer_identity(tokenizer) != val_tokenizer):
        tokens = heldout_tokens(val_files, tokenizer)
    if len(tokens) and int(tokens.max()) >= model.config.vocab_size:
        raise ValueError(f"the held-out tokens are not in the tokenizer of {model_path}")
    loss = heldout_loss(model, tokens, seq_len=min(LOSS_SEQ, model.config.block_size))
    del model
    if per_char:
        loss *= len(tokens) / max(1, sum(len(f.text) for f in val_files))
    return loss


def compare_per_char(new_path: Path, old_path: Path, val_files: Sequence[SourceFile]) -> bool:
    """Whether the two models' losses must be per character: their tokenizers differ."""
    from codeassist.training.dataset import tokenizer_identity

    if not val_files:
        return False
    return tokenizer_identity(model_tokenizer(new_path)) != tokenizer_identity(model_tokenizer(old_path))


PER_CHAR_NOTE = " (held-out loss per character: the two models have different tokenizers)"


def score(model_path: Path, val_tokens: np.ndarray, samples: Sequence[LineSample], device: str = "cpu",
          val_files: Sequence[SourceFile] = (), val_tokenizer: str = TOKENIZER_NAME,
          per_char: bool = False) -> Score:
    loss = model_loss(model_path, val_tokens, val_files, val_tokenizer, per_char)
    return Score(loss=loss, exact_match=exact_match(model_path, samples, device), lines=len(samples))


def decide(new: Score, old: Score) -> tuple[bool, str]:
    """(install the new model?, one sentence saying so and by how much)."""
    if not (math.isfinite(new.loss) and math.isfinite(old.loss)):
        return False, "there is not enough held-out code to compare the models"
    loss_gain = (old.loss - new.loss) / old.loss
    em_gain = (new.exact_match - old.exact_match) if new.lines else 0.0
    better = (loss_gain >= MIN_LOSS_GAIN and em_gain >= 0) or (em_gain >= MIN_EM_GAIN and loss_gain >= 0)
    figures = f"held-out loss {old.loss:.3f} -> {new.loss:.3f} ({-100 * loss_gain:+.1f}%)"
    if new.lines:
        figures += (f", line exact match {100 * old.exact_match:.1f}% -> {100 * new.exact_match:.1f}% "
                    f"({100 * em_gain:+.1f} points, {new.lines} lines)")
    verdict = "the new model is better" if better else "the new model is not measurably better"
    return better, f"{verdict}: {figures}"


def run_gate(new_path: Path, old_path: Path, val_tokens: np.ndarray, val_files: Sequence[SourceFile],
             lines: int = 100, seed: int = 0, device: str = "cpu", val_tokenizer: str = TOKENIZER_NAME
             ) -> GateResult:
    """`val_tokenizer`: the tokenizer identity (dataset.tokenizer_identity) of `val_tokens`."""
    samples = line_samples(val_files, lines, seed)
    per_char = compare_per_char(new_path, old_path, val_files)
    new = score(new_path, val_tokens, samples, device, val_files, val_tokenizer, per_char)
    old = score(old_path, val_tokens, samples, device, val_files, val_tokenizer, per_char)
    better, summary = decide(new, old)
    return GateResult(new=new, old=old, better=better, summary=summary + (PER_CHAR_NOTE if per_char else ""))
