"""Cross-entropy of a linear head, computed chunk by chunk without keeping the logits.

For the default shape the tied output head (50,304 x 256) is three quarters of a training
step's arithmetic, and the logits of a 4 x 1024 batch are 824 MB of float32. The usual
`F.cross_entropy(x @ W.T, y)` writes them, reads and writes them again in log_softmax, keeps
them for backward, and makes two more full passes there (softmax gradient, zero fill for the
NLL gradient). Here each chunk of rows is multiplied, turned into its softmax in place, and
turned into its gradient in place, and both gradients are taken right away (the same two
matrix products backward would do). Nothing of logit size outlives a chunk.

The trick is that of Liger-Kernel's fused linear cross-entropy: because the loss is the
last node of the graph, the gradients can be computed during forward and only scaled by the
incoming gradient in backward. The products are the same three a plain head does; what goes
is the memory traffic, about a seventh of a CPU training step.
"""

from __future__ import annotations

from typing import Any

import torch

CHUNK_ROWS = 1024  # 1024 x 50,304 float32 = 206 MB of scratch, reused


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                ignore_index: int, chunk: int) -> torch.Tensor:
        n = x.shape[0]
        valid = targets != ignore_index
        count = int(valid.sum())
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros_like(weight)
        total = x.new_zeros((), dtype=torch.promote_types(x.dtype, torch.float32))
        scale = 1.0 / max(count, 1)
        for s in range(0, n, chunk):
            xc, yc, vc = x[s:s + chunk], targets[s:s + chunk], valid[s:s + chunk]
            safe_y = torch.where(vc, yc, 0)[:, None]
            logits = xc @ weight.t()  # (rows, vocab), the only logit-sized buffer
            target_logit = logits.gather(1, safe_y)
            peak = logits.amax(1, keepdim=True)
            logits.sub_(peak).exp_()
            sums = logits.sum(1, keepdim=True)
            row_loss = (sums.log() + peak - target_logit).squeeze(1)
            total += row_loss.masked_fill(~vc, 0.0).sum()
            # d loss / d logits = (softmax - onehot) / count, and 0 for ignored rows
            logits.div_(sums)
            logits.scatter_add_(1, safe_y, torch.full_like(target_logit, -1.0))
            logits.mul_((vc.to(logits.dtype) * scale)[:, None])
            torch.mm(logits, weight, out=grad_x[s:s + chunk])
            grad_w.addmm_(logits.t(), xc)
        ctx.save_for_backward(grad_x, grad_w)
        return total * scale if count else total * float("nan")

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_out, grad_w * grad_out, None, None, None


def linear_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = -1, chunk: int = CHUNK_ROWS) -> torch.Tensor:
    """Mean cross-entropy of `x @ weight.T` against `targets` (rows equal to ignore_index skipped).

    x: (N, C), weight: (V, C), targets: (N,). Equal to
    `F.cross_entropy(x @ weight.T, targets, ignore_index=ignore_index)`, and to its gradients,
    up to float rounding. Like it, a batch whose every target is ignored gives NaN.
    """
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        # evaluation: no gradients to take, so just do it chunk by chunk
        valid = targets != ignore_index
        acc = torch.promote_types(x.dtype, torch.float32)
        total = x.new_zeros((), dtype=acc)
        for s in range(0, x.shape[0], chunk):
            logits = (x[s:s + chunk] @ weight.t()).to(acc)
            total += torch.nn.functional.cross_entropy(logits, targets[s:s + chunk], ignore_index=ignore_index,
                                                       reduction="sum")
        count = int(valid.sum())
        return total / count if count else total * float("nan")
    loss: torch.Tensor = _LinearCrossEntropy.apply(x, weight, targets, ignore_index, chunk)  # type: ignore[no-untyped-call]
    return loss
