"""The running batch: a slot table over a static KV cache of `max_batch` rows.

Continuous batching needs sequences to join and leave at token boundaries. The model's cache
(model/gpt.py) writes rows 0..B-1 of its buffers for a batch of B, so the active sequences are
kept compact in rows 0..n-1:

- a decode step runs the n active rows at once, each at its own position (per-row input_pos);
- a new sequence is prefilled into row n through a cache whose buffers are *views* of rows
  n..n+m-1 of the big cache, so the model needs no change to write rows other than 0;
- when row i leaves, the last active row's keys and values are copied into row i;
- one prompt at a time may be prefilled piecewise (`start_row`, `extend`, `commit`): a cached
  prefix copied in, then chunks between decode steps. That pending row sits just past the
  active ones, so decode steps (rows 0..n-1) leave it alone, and it moves down with them.

Slots past a row's length hold stale values; the attention mask hides them until the row's
own decode steps overwrite them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from codeassist.model.gpt import KVCache

if TYPE_CHECKING:
    from codeassist.model.causal_lm import CausalLM


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


def _attention_layers(model: CausalLM) -> list[Any]:
    """The modules that hold a kv_cache: every family's `attention_layers()` (model/causal_lm.py),
    or a GPT's blocks' attention."""
    layers = getattr(model, "attention_layers", None)
    if layers is not None:
        return list(layers())
    return [block.attn for block in model.transformer.blocks()]


class BatchState:
    """Owns the model's KV caches; not thread-safe (the scheduler's worker thread owns it)."""

    def __init__(self, model: CausalLM, max_batch: int, device: torch.device, dtype: torch.dtype,
                 context: int | None = None) -> None:
        self.model = model
        self.max_batch = max_batch
        self.device = device
        # cache slots per row: the engine's context (a 32k-position model is capped there)
        self.block_size = min(model.config.block_size, context or model.config.block_size)
        model.setup_kv_cache(max_batch, self.block_size, dtype=dtype)
        self.caches: list[KVCache] = []
        for attn in _attention_layers(model):
            assert attn.kv_cache is not None
            self.caches.append(attn.kv_cache)
        self.rows: list[RowState] = []  # row i of the cache belongs to rows[i]
        self.pending: RowState | None = None  # the row being prefilled piecewise, at index `active`

    @property
    def active(self) -> int:
        return len(self.rows)

    @property
    def free(self) -> int:
        return self.max_batch - len(self.rows) - (self.pending is not None)

    def _install(self, caches: list[KVCache]) -> None:
        for attn, cache in zip(_attention_layers(self.model), caches, strict=True):
            attn.kv_cache = cache

    def prefill(self, prompts: list[list[int]]) -> torch.Tensor:
        """Add prompts as new rows n..n+m-1; returns the logits after each prompt, (m, vocab)."""
        return self.prefill_cached([(None, 0, list(p)) for p in prompts])

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
            self._copy(last, row, self.rows[last].pos)
            self.rows[row] = self.rows[last]
            moved = last
        self.rows.pop()
        if self.pending is not None:  # keep it just past the active rows
            self._copy(last + 1, last, self.pending.pos)
        return moved

    def _copy(self, src: int, dst: int, length: int) -> None:
        for c in self.caches:
            c.k[dst, :, :length] = c.k[src, :, :length]
            c.v[dst, :, :length] = c.v[src, :, :length]

    def prefill_cached(self, starts: list[tuple[tuple[torch.Tensor, torch.Tensor] | None, int, list[int]]]
                       ) -> torch.Tensor:
        """Add rows n..n+m-1, each from a cached prefix: (snapshot or None, its length L, the
        tokens after it). The prefixes are copied in, then every row's tokens run in one
        right-padded pass at positions L.., each row its own. Logits after each row's last token,
        (m, vocab). Typing users' keystrokes arrive together, each a cached window plus a few new
        tokens: one pass for all of them instead of one pass each. Cold prompts are the case L = 0
        (`prefill`)."""
        m = len(starts)
        if self.pending is not None:
            raise ValueError("a row is being prefilled piecewise")
        if m == 0 or m > self.free:
            raise ValueError(f"cannot prefill {m} prompts into {self.free} free rows")
        T = max(len(tokens) for _, _, tokens in starts)
        if min(len(tokens) for _, _, tokens in starts) < 1 or max(n for _, n, _ in starts) + T > self.block_size:
            raise ValueError("a row has no tokens, or its padded tokens pass the end of the context")
        first = self.active
        for i, (prefix, length, _) in enumerate(starts):
            if prefix is not None and length:
                self._fill(first + i, prefix, length)
        self._install([_RowView(c, first, m) for c in self.caches])
        try:
            # right-pad: a row's padding writes slots past its end, which its mask hides and its
            # own decode steps overwrite before they can be seen (as in `prefill`)
            x = torch.tensor([t + [0] * (T - len(t)) for _, _, t in starts], device=self.device)  # (m, T)
            offsets = {n for _, n, _ in starts}
            if len(offsets) == 1:  # the same slots in every row (cold prompts: the causal kernel)
                pos = torch.arange(T, device=self.device).unsqueeze(0) + offsets.pop()  # (1, T)
            else:
                pos = torch.tensor([[n + j for j in range(T)] for _, n, _ in starts], device=self.device)  # (m, T)
            kv_len = max(n for _, n, _ in starts) + T
            logits = self.model.last_token_logits(x, pos, kv_len, [len(t) for _, _, t in starts]).float()
        finally:
            self._install(self.caches)
        self.rows.extend(RowState(pos=n + len(t), token=-1) for _, n, t in starts)
        return logits

    def _fill(self, row: int, prefix: tuple[torch.Tensor, torch.Tensor], length: int) -> None:
        k, v = prefix
        for i, c in enumerate(self.caches):
            c.k[row, :, :length] = k[i, :, :length]
            c.v[row, :, :length] = v[i, :, :length]

    # -- piecewise prefill of one row ------------------------------------------------------------

    def snapshot(self, row: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of a row's first `length` keys and values, (n_layer, n_head, length, head_dim)."""
        k = torch.stack([c.k[row, :, :length] for c in self.caches])
        v = torch.stack([c.v[row, :, :length] for c in self.caches])
        return k, v

    def start_row(self, prefix: tuple[torch.Tensor, torch.Tensor] | None = None, length: int = 0) -> int:
        """Claim the next row for a piecewise prefill, its first `length` slots copied from `prefix`
        (a snapshot); returns the row's index."""
        if self.pending is not None or self.free == 0:
            raise ValueError("no row for a piecewise prefill")
        row = self.active
        if prefix is not None and length:
            self._fill(row, prefix, length)
        self.pending = RowState(pos=length, token=-1)
        return row

    def extend(self, tokens: list[int]) -> torch.Tensor:
        """Run `tokens` on the pending row from its position on; the logits after the last, (vocab,)."""
        p = self.pending
        if p is None or not tokens or p.pos + len(tokens) > self.block_size:
            raise ValueError("no pending row, no tokens, or past the context")
        T = len(tokens)
        self._install([_RowView(c, self.active, 1) for c in self.caches])
        try:
            x = torch.tensor([tokens], device=self.device)  # (1, T)
            pos = torch.arange(p.pos, p.pos + T, device=self.device).unsqueeze(0)  # (1, T)
            logits = self.model.last_token_logits(x, pos, p.pos + T, [T]).float()[0]  # (vocab,)
        finally:
            self._install(self.caches)
        p.pos += T
        return logits

    def commit(self) -> int:
        """The pending row joins the active ones (its token is set after sampling); its index."""
        if self.pending is None:
            raise ValueError("no pending row")
        self.rows.append(self.pending)
        self.pending = None
        return self.active - 1

    def close(self) -> None:
        self.model.drop_kv_cache()
        self.rows = []
        self.pending = None
