"""What the user gets from a run: exact match before and after on the same held-out lines, and
whether the difference is beyond noise for that many lines.

The gate says "better" when the held-out loss falls, even if exact match moved by a line or two;
on 300 lines one line is a third of a point. Both models complete the same lines, so the test is
paired: McNemar's exact test on the discordant lines (wrong -> right against right -> wrong), a
two-sided binomial test with p = 1/2. p < 0.05: the change is beyond noise; else it is reported as
within noise for that many lines, whatever the gate decided.

Each line is scored by the gate's own scorer (gate.score_lines: evaluation.exact.line_hits, one
loaded model, the editor's pipeline), so the figures are the gate's figures, line by line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codeassist.evaluation.lines import LineSample
from codeassist.model.tokenizer import TOKENIZER_NAME
from codeassist.training.collect import SourceFile
from codeassist.training.gate import PER_CHAR_NOTE, GateResult, compare_per_char, decide, score_lines

SIGNIFICANCE = 0.05


def mcnemar_exact_p(gained: int, lost: int) -> float:
    """Two-sided exact McNemar p-value: `gained` lines wrong -> right, `lost` right -> wrong."""
    if gained < 0 or lost < 0:
        raise ValueError("line counts cannot be negative")
    n = gained + lost
    if n == 0:
        return 1.0
    k = min(gained, lost)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n  # P(X <= k), X ~ Binomial(n, 1/2)
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class Verdict:
    lines: int
    old_hits: int
    new_hits: int
    gained: int  # wrong before, right after
    lost: int  # right before, wrong after
    p_value: float

    @property
    def beyond_noise(self) -> bool:
        return self.p_value < SIGNIFICANCE

    @property
    def sentence(self) -> str:
        """One sentence for the closing report."""
        if not self.lines:
            return "there were no held-out lines to measure exact match on"
        old, new = 100 * self.old_hits / self.lines, 100 * self.new_hits / self.lines
        what = (f"line exact match on {self.lines} held-out lines of your code: {old:.1f}% -> {new:.1f}% "
                f"({new - old:+.1f} points; {self.gained} lines newly right, {self.lost} newly wrong)")
        if not self.beyond_noise:
            return f"{what}, within noise for {self.lines} lines (McNemar p = {self.p_value:.2f})"
        direction = "better" if self.new_hits > self.old_hits else "worse"
        return f"{what}, {direction} beyond noise (McNemar p = {self.p_value:.3f})"


def compare_hits(old: Sequence[bool], new: Sequence[bool]) -> Verdict:
    """The paired comparison of two models' hits on the same lines."""
    if len(old) != len(new):
        raise ValueError("both models must be scored on the same lines")
    gained = sum(1 for a, b in zip(old, new, strict=True) if b and not a)
    lost = sum(1 for a, b in zip(old, new, strict=True) if a and not b)
    return Verdict(lines=len(old), old_hits=sum(map(bool, old)), new_hits=sum(map(bool, new)),
                   gained=gained, lost=lost, p_value=mcnemar_exact_p(gained, lost))


def gate_with_verdict(new_path: Path, old_path: Path, val_tokens: np.ndarray, samples: Sequence[LineSample],
                      device: str = "cpu", val_files: Sequence[SourceFile] = (),
                      val_tokenizer: str = TOKENIZER_NAME) -> tuple[GateResult, Verdict]:
    """gate.run_gate's decision on `samples`, and the paired verdict on the same lines.

    `val_files` and `val_tokenizer` (the shard's tokenizer identity): a model in another
    tokenizer is scored on the files tokenized in its own; see gate.model_loss."""
    per_char = compare_per_char(new_path, old_path, val_files)
    new, new_hits = score_lines(new_path, val_tokens, samples, device, val_files, val_tokenizer, per_char)
    old, old_hits = score_lines(old_path, val_tokens, samples, device, val_files, val_tokenizer, per_char)
    better, summary = decide(new, old)
    summary += PER_CHAR_NOTE if per_char else ""
    return GateResult(new=new, old=old, better=better, summary=summary), compare_hits(old_hits, new_hits)


def closing_report(installed: bool, verdict: Verdict) -> str:
    """The closing report's sentence on exact match, in the user's terms."""
    text = f"What you get: {verdict.sentence}."
    if installed and not (verdict.beyond_noise and verdict.new_hits > verdict.old_hits):
        text += (" The gate installed the new model for its lower held-out loss; on completing these "
                 "lines it is not measurably better.")
    return text
