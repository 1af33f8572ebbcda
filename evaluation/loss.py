"""Held-out loss: the one function every figure of "how well does the model predict unseen code"
comes from (the gate, the training loop's validation and early stopping, the quantization
report's perplexity).

The loss is the model's own next-token cross-entropy (`CausalLM.forward(targets=...)`: the fused
head in fp32 training, the plain head in reduced precision or with a quantized head), averaged
over every target token. Callers choose the text: `windows` lays out evenly spaced,
non-overlapping windows of a token stream (the same ones every time); the training loop passes
its own seeded batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

__all__ = ["heldout_loss", "perplexity", "windows"]


def windows(tokens: np.ndarray | Sequence[int], seq_len: int, count: int | None = None
            ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Up to `count` (default: as many as fit) evenly spaced, non-overlapping (inputs, targets)
    windows of `seq_len` tokens, each (1, T); fewer tokens shorten the window; none for < 2 tokens."""
    data = np.asarray(tokens)
    seq = min(seq_len, len(data) - 1)
    if seq < 1:
        return []
    fit = (len(data) - 1) // seq
    n = fit if count is None else min(count, fit)
    stride = (len(data) - 1) // n
    out = []
    for k in range(n):
        s = k * stride
        x = torch.from_numpy(data[s:s + seq].astype(np.int64))[None]
        y = torch.from_numpy(data[s + 1:s + 1 + seq].astype(np.int64))[None]
        out.append((x, y))
    return out


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                 device: torch.device | None = None) -> float:
    """Mean next-token loss per target token over (inputs, targets) batches, in eval mode (the
    model is left in eval mode); NaN when there are no batches."""
    model.eval()
    total, count = 0.0, 0
    for x, y in batches:
        if device is not None:
            x, y = x.to(device), y.to(device)
        total += float(model(x, targets=y)) * y.numel()
        count += y.numel()
    return total / count if count else math.nan


def perplexity(model: torch.nn.Module, tokens: np.ndarray | Sequence[int], seq_len: int) -> float:
    """exp(held-out loss) over every window of `seq_len` tokens that fits in `tokens`."""
    return math.exp(heldout_loss(model, windows(tokens, seq_len)))
