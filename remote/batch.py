"""The running batch: a slot table over a static KV cache of `max_batch` rows.

Continuous batching needs sequences to join and leave at token boundaries. The model's cache
(model/gpt.py) writes rows 0..B-1 of its buffers for a batch of B, so the active sequences are
kept compact in rows 0..n-1:

- a decode step runs the n active rows at once, each at its own position (per-row input_pos);
- a new sequence is prefilled into row n through a cache whose buffers are *views* of rows
  n..n+m-1 of the big cache, so the model needs no change to write rows other than 0;
- when row i leaves, the last active row's keys and values are copied into row i.

Slots past a row's length hold stale values; the attention mask hides them until the row's
own decode steps overwrite them (the same argument as Engine.generate_batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from codeassist.model.gpt import GPT, KVCache


@dataclass
class RowState:
    """What the batch knows about one occupied row: the next position and the token to feed."""

    pos: int
    token: int


class _RowView(KVCache):
    """A KVCache whose buffers are views of a contiguous block of another cache's rows."""

    def __init__(self, base: KVCache, start: int, count: int) -> None:
        torch.nn.Module.__init__(self)
        self.k = base.k[start:start + count]
        self.v = base.v[start:start + count]


class BatchState:
    """Owns the model's KV caches; not thread-safe (the scheduler's worker thread owns it)."""

    def __init__(self, model: GPT, max_batch: int, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self.max_batch = max_batch
        self.device = device
        self.block_size = model.config.block_size
        model.setup_kv_cache(max_batch, self.block_size, dtype=dtype)
        self.caches: list[KVCache] = []
        for block in model.transformer.blocks():
            assert block.attn.kv_cache is not None
            self.caches.append(block.attn.kv_cache)
        self.rows: list[RowState] = []  # row i of the cache belongs to rows[i]

    @property
    def active(self) -> int:
        return len(self.rows)

    @property
    def free(self) -> int:
        return self.max_batch - len(self.rows)

    def _install(self, caches: list[KVCache]) -> None:
        for block, cache in zip(self.model.transformer.blocks(), caches, strict=True):
            block.attn.kv_cache = cache

    def prefill(self, prompts: list[list[int]]) -> torch.Tensor:
        """Add prompts as new rows n..n+m-1; returns the logits after each prompt, (m, vocab)."""
        m = len(prompts)
        if m == 0 or m > self.free:
            raise ValueError(f"cannot prefill {m} prompts into {self.free} free rows")
        start = self.active
        lengths = [len(p) for p in prompts]
        T = max(lengths)
        if min(lengths) < 1 or self.block_size < T:
            raise ValueError("a prompt is empty or longer than the context")
        self._install([_RowView(c, start, m) for c in self.caches])
        try:
            # right-pad: each row's padding slots are masked, then overwritten by its decode steps
            x = torch.tensor([p + [0] * (T - len(p)) for p in prompts], device=self.device)  # (m, T)
            pos = torch.arange(T, device=self.device).unsqueeze(0)  # (1, T): same slots in every row
            logits = self.model.last_token_logits(x, pos, T, lengths).float()  # (m, vocab)
        finally:
            self._install(self.caches)
        # the token to feed is decided by the caller after sampling; -1 marks "not yet sampled"
        self.rows.extend(RowState(pos=n, token=-1) for n in lengths)
        return logits

    def decode(self) -> torch.Tensor:
        """One step for every active row, each feeding its `token` at its `pos`; logits (n, vocab)."""
        n = self.active
        if n == 0:
            raise ValueError("no active rows")
        if any(r.token < 0 for r in self.rows):
            raise ValueError("a row has no token to feed")
        if any(r.pos >= self.block_size for r in self.rows):
            raise ValueError("a row is at the end of the context")
        x = torch.tensor([[r.token] for r in self.rows], device=self.device)  # (n, 1)
        pos = torch.tensor([[r.pos] for r in self.rows], device=self.device)  # (n, 1)
        kv_len = max(r.pos for r in self.rows) + 1
        logits: torch.Tensor = self.model(x, pos, kv_len)[:, -1].float()  # (n, vocab)
        for r in self.rows:
            r.pos += 1
        return logits

    def remove(self, row: int) -> int | None:
        """Free `row`; the last row moves into it. Returns the moved row's old index, or None."""
        last = self.active - 1
        if not 0 <= row <= last:
            raise IndexError(f"row {row} is not active")
        moved = None
        if row != last:
            length = self.rows[last].pos
            for c in self.caches:
                c.k[row, :, :length] = c.k[last, :, :length]
                c.v[row, :, :length] = c.v[last, :, :length]
            self.rows[row] = self.rows[last]
            moved = last
        self.rows.pop()
        return moved

    def close(self) -> None:
        self.model.drop_kv_cache()
        self.rows = []
