"""The one held-out loss: windows, the per-token mean, perplexity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from codeassist.evaluation.loss import heldout_loss, perplexity, windows
from tests.conftest import make_tiny


def test_windows_are_evenly_spaced_non_overlapping_and_shifted_by_one() -> None:
    tokens = np.arange(101)
    ws = windows(tokens, 10, count=4)
    assert len(ws) == 4
    starts = [int(x[0, 0]) for x, _ in ws]
    assert starts == [0, 25, 50, 75]
    for x, y in ws:
        assert x.shape == y.shape == (1, 10) and x.dtype == torch.int64
        assert torch.equal(y, x + 1)
    assert len(windows(tokens, 10)) == 10  # as many as fit
    assert windows([5], 10) == [] and len(windows([1, 2, 3], 10)) == 1  # short text: one short window


def test_heldout_loss_is_the_mean_cross_entropy_per_target_token() -> None:
    model = make_tiny().eval()
    tokens = torch.randint(0, 200, (80,), generator=torch.Generator().manual_seed(0)).numpy()
    ws = windows(tokens, 16, count=3)
    with torch.no_grad():
        expected = torch.cat([F.cross_entropy(model(x)[0].float(), y[0], reduction="none") for x, y in ws]).mean()
    assert heldout_loss(model, ws) == pytest.approx(float(expected), rel=1e-5)
    assert not model.training
    assert math.isnan(heldout_loss(model, []))
    assert perplexity(model, tokens, 16) == pytest.approx(math.exp(heldout_loss(model, windows(tokens, 16))))


def test_unequal_batches_are_weighted_by_their_tokens() -> None:
    model = make_tiny().eval()
    tokens = torch.randint(0, 200, (60,), generator=torch.Generator().manual_seed(1))
    long = (tokens[None, :40], tokens[None, 1:41])
    short = (tokens[None, 40:44], tokens[None, 41:45])
    a, b = heldout_loss(model, [long]), heldout_loss(model, [short])
    assert heldout_loss(model, [long, short]) == pytest.approx((40 * a + 4 * b) / 44, rel=1e-6)
