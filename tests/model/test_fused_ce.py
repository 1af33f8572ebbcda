"""The chunked linear cross-entropy equals the plain head + F.cross_entropy, values and gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from codeassist.model import fused_ce
from codeassist.model.fused_ce import linear_cross_entropy
from tests.conftest import make_tiny


def _case(n: int = 203, c: int = 24, v: int = 517, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=gen, dtype=torch.float64)
    w = torch.randn(v, c, generator=gen, dtype=torch.float64) * 0.7
    y = torch.randint(0, v, (n,), generator=gen)
    y[::5] = -1  # ignored rows, some of them at chunk edges
    return x, w, y


@pytest.mark.parametrize("chunk", [1, 16, 64, 203, 4096])
def test_loss_and_gradients_match_the_plain_head(chunk: int) -> None:
    x, w, y = _case()
    x1, w1 = x.clone().requires_grad_(), w.clone().requires_grad_()
    ref = F.cross_entropy(x1 @ w1.t(), y, ignore_index=-1)
    (2.5 * ref).backward()
    x2, w2 = x.clone().requires_grad_(), w.clone().requires_grad_()
    got = linear_cross_entropy(x2, w2, y, chunk=chunk)
    (2.5 * got).backward()  # an upstream gradient other than 1 is applied
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(x2.grad, x1.grad)
    torch.testing.assert_close(w2.grad, w1.grad)


def test_without_gradients_it_gives_the_same_loss() -> None:
    x, w, y = _case(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(x, w, y, chunk=50),
                                   F.cross_entropy(x @ w.t(), y, ignore_index=-1))


def test_every_target_ignored_gives_nan_like_cross_entropy() -> None:
    x, w, _ = _case(n=8)
    y = torch.full((8,), -1)
    x.requires_grad_()
    assert math.isnan(float(F.cross_entropy(x @ w.t(), y, ignore_index=-1).detach()))
    assert math.isnan(float(linear_cross_entropy(x, w, y).detach()))


def test_peaked_logits_do_not_overflow() -> None:
    x, w, y = _case(n=32, seed=2)
    x = (x * 400).float().requires_grad_()  # logits in the thousands: exp() would overflow unshifted
    w = w.float()
    got = linear_cross_entropy(x, w, y, chunk=7)
    assert torch.isfinite(got)
    torch.testing.assert_close(got, F.cross_entropy(x @ w.t(), y, ignore_index=-1), rtol=1e-4, atol=1e-3)


def test_model_training_loss_uses_it_and_matches_the_logits(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_tiny()
    model.train()
    idx = torch.randint(0, 50257, (2, 17))
    targets = torch.randint(0, 50257, (2, 17))
    targets[0, :3] = -1
    fused_calls: list[int] = []
    real_forward = fused_ce._LinearCrossEntropy.forward

    def counting_forward(*args: object) -> torch.Tensor:
        fused_calls.append(1)
        return real_forward(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(fused_ce._LinearCrossEntropy, "forward", staticmethod(counting_forward))
    head_calls: list[int] = []
    hook = model.lm_head.register_forward_hook(lambda *_: head_calls.append(1))
    fused = model(idx, targets=targets)
    # the fused path ran: its autograd function, and the head layer never made the logits
    assert fused_calls == [1] and head_calls == []
    assert type(fused.grad_fn).__name__ == "_LinearCrossEntropyBackward"
    fused.backward()
    fused_grad = model.transformer.wte.weight.grad.clone()
    model.zero_grad()
    logits = model(idx)
    assert head_calls == [1]
    hook.remove()
    plain = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
    plain.backward()
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    # the tied weight gets both the embedding's and the head's gradient in both paths
    torch.testing.assert_close(fused_grad, model.transformer.wte.weight.grad, rtol=1e-4, atol=1e-6)
