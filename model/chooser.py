"""Choosing one sequence's next token: the healing constraint, then the ids never chosen, then
greedy or sampling. The engine, its speculative verifier and the team server's scheduler all
choose through here, so a rule added to the choice (copy-aware mixing, a grammar) lands once.

The ids never chosen are the special ids that are no stop (control tokens, the embedding's
padding rows) and, when end-of-text does not end the output, the stops too: a completion is
always text.
"""

from __future__ import annotations

import weakref

import torch

from codeassist.model.healing import PrefixConstraint
from codeassist.model.sampling import SamplingParams, sample_next
from codeassist.model.tokenization import Tokenizer

__all__ = ["TokenChooser", "ends_output", "mask_banned"]

_BANNED: weakref.WeakKeyDictionary[Tokenizer, dict[tuple[bool, int, str], torch.Tensor | None]] = (
    weakref.WeakKeyDictionary())


def mask_banned(logits: torch.Tensor, tokenizer: Tokenizer, stop_on_eos: bool) -> torch.Tensor:
    """`logits` (..., vocab) with the ids that may not be chosen set to -inf, in place: each
    step's logits are its own (a copy of 50k floats per token cost more than the masking)."""
    size = logits.size(-1)
    masks = _BANNED.setdefault(tokenizer, {})
    key = (stop_on_eos, size, str(logits.device))
    if key not in masks:
        ban = {i for i in tokenizer.special_ids() if i < size} | set(range(min(tokenizer.n_vocab, size), size))
        if stop_on_eos:
            ban -= tokenizer.stop_ids
        masks[key] = torch.tensor(sorted(ban), device=logits.device) if ban else None
    idx = masks[key]
    return logits if idx is None else logits.index_fill_(-1, idx, float("-inf"))


def ends_output(tokenizer: Tokenizer, token: int) -> bool:
    """A stop id ends the completion; so does any other special id that a path without the mask
    chose (a verified draft): it has no text."""
    return token in tokenizer.stop_ids or tokenizer.is_special(token)


class TokenChooser:
    """One sequence's choice of its next token, step after step."""

    def __init__(self, tokenizer: Tokenizer, sampling: SamplingParams, forced_prefix: bytes = b"",
                 seed: int | None = None, device: torch.device | str = "cpu", stop_on_eos: bool = True) -> None:
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.stop_on_eos = stop_on_eos
        self.gen = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        self._constraint = PrefixConstraint(forced_prefix, tokenizer) if forced_prefix else None

    @property
    def healing(self) -> bool:
        """The forced prefix is not yet spelled out: the next token is constrained (no drafts)."""
        return self._constraint is not None and not self._constraint.done

    def constrain(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits with the healing constraint applied (a new tensor while it is active)."""
        return self._constraint.mask(logits) if self.healing and self._constraint is not None else logits

    def choose(self, logits: torch.Tensor, greedy: int | None = None) -> int:
        """The next token from this step's logits, (vocab,). `greedy` is their argmax with the
        banned ids masked, when the caller has it (a batch takes every row's at once)."""
        if greedy is not None and self.sampling.greedy and not self.healing:
            token = greedy
        else:
            token = sample_next(mask_banned(self.constrain(logits), self.tokenizer, self.stop_on_eos),
                                self.sampling, self.gen)
        self.advance(token)
        return token

    def advance(self, token: int) -> None:
        """`token` was emitted (chosen here, or a verified draft)."""
        if self._constraint is not None:
            self._constraint.advance(token)
