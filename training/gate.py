"""The quality gate: is the new model measurably better than the user's current one?

Both models are scored on the held-out files of the user's own repositories:
- held-out loss: mean next-token loss over fixed windows of the validation shard (no FIM),
  evaluation.loss;
- line exact match: a line of a held-out file is cut at a seeded position, the rest of that
  line removed (evaluation.lines.line_samples), and the completion asked for through the language
  server's own pipeline (evaluation.exact: the context window, prompt, token healing, stop rules
  and post-processing an editor gets). A hit is the suggestion equal to the removed text,
  ignoring trailing whitespace.

The new model wins if its loss is lower by at least MIN_LOSS_GAIN (relative) without losing
exact match, or its exact match is higher by at least MIN_EM_GAIN without a higher loss.

Each model is scored in its own tokenizer (ours, or the tokenizer.json an open family carries):
the validation shard when it was written in that tokenizer, else the held-out files tokenized
again. When the two models' tokenizers differ, per-token losses do not compare, so both losses
are per character of the held-out text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from codeassist.evaluation.exact import line_hits
from codeassist.evaluation.lines import LineSample, line_samples
from codeassist.evaluation.loss import heldout_loss, windows
from codeassist.model.tokenizer import TOKENIZER_NAME
from codeassist.training.collect import SourceFile

if TYPE_CHECKING:
    from codeassist.model.tokenization import Tokenizer

MIN_LOSS_GAIN = 0.01  # 1% lower held-out loss ...
MIN_EM_GAIN = 0.02  # ... or 2 points more lines completed exactly
LOSS_WINDOWS = 32
LOSS_SEQ = 512


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


def model_tokenizer(model_path: Path) -> Tokenizer:
    """The tokenizer of a model file or Hugging Face folder, without loading its weights."""
    from codeassist.model.checkpoint import read_info
    from codeassist.model.hf_tokenizer import HFTokenizer
    from codeassist.model.tokenization import codeassist_tokenizer, tokenizer_from_metadata

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
    loss = heldout_loss(model, windows(tokens, min(LOSS_SEQ, model.config.block_size), LOSS_WINDOWS))
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


def score_lines(model_path: Path, val_tokens: np.ndarray, samples: Sequence[LineSample],
                device: str = "cpu", val_files: Sequence[SourceFile] = (), val_tokenizer: str = TOKENIZER_NAME,
                per_char: bool = False) -> tuple[Score, list[bool]]:
    """The model's Score, and its hit on each of `samples` (evaluation.exact.line_hits)."""
    loss = model_loss(model_path, val_tokens, val_files, val_tokenizer, per_char)
    hits = line_hits(model_path, samples, device)
    em = sum(hits) / len(hits) if hits else math.nan
    return Score(loss=loss, exact_match=em, lines=len(hits)), hits


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
    new, _ = score_lines(new_path, val_tokens, samples, device, val_files, val_tokenizer, per_char)
    old, _ = score_lines(old_path, val_tokens, samples, device, val_files, val_tokenizer, per_char)
    better, summary = decide(new, old)
    return GateResult(new=new, old=old, better=better, summary=summary + (PER_CHAR_NOTE if per_char else ""))
