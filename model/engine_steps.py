"""The forward passes of batch-1 generation (after gpt-fast): prefill, decode one token, score a
draft. Each is one call of the model on row 0 of its static KV cache, small enough to test or
compile alone. The engine and the draft model of speculation both run them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from codeassist.model.causal_lm import CausalLM

__all__ = ["decode_one_token", "prefill", "prepare", "score_tokens"]


def prepare(model: CausalLM, device: torch.device, dtype: torch.dtype) -> CausalLM:
    """`model` on `device`, its floating-point weights in `dtype`, in eval mode."""
    model = model.to(device)
    if any(p.is_floating_point() and p.dtype != dtype for p in model.parameters()):
        model = model.to(dtype=dtype)
    return model.eval()


def prefill(model: CausalLM, ids: list[int], start_pos: int, device: torch.device) -> torch.Tensor:
    """Run ids at positions start_pos.. (row 0); the logits after the last, (vocab,)."""
    x = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    pos = torch.arange(start_pos, start_pos + len(ids), device=device).unsqueeze(0)  # (1, T)
    logits: torch.Tensor = model(x, pos, start_pos + len(ids), last_only=True)[0, -1].float()
    return logits


def decode_one_token(model: CausalLM, token: int, pos: int, device: torch.device) -> torch.Tensor:
    """Feed one token at `pos` (row 0); the logits after it, (vocab,)."""
    x = torch.tensor([[token]], dtype=torch.long, device=device)
    p = torch.tensor([[pos]], device=device)
    logits: torch.Tensor = model(x, p, pos + 1)[0, -1].float()
    return logits


def score_tokens(model: CausalLM, ids: list[int], start_pos: int, device: torch.device) -> torch.Tensor:
    """Logits after each of ids at positions start_pos.. (row 0), (len(ids), vocab): a verify pass."""
    x = torch.tensor([ids], dtype=torch.long, device=device)
    pos = torch.arange(start_pos, start_pos + len(ids), device=device).unsqueeze(0)
    logits: torch.Tensor = model(x, pos, start_pos + len(ids))[0].float()
    return logits
