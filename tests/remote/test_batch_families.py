"""The team server's batcher drives the open model families as it drives GPT-2: rows of a batch
(right-padded prefill, grouped-query and multi-query caches viewed per row) decode what each
prompt decodes alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codeassist.model.causal_lm import CausalLM
from codeassist.model.families import load_pretrained
from codeassist.remote.batch import BatchState
from tests.model.family_models import save_hf

PROMPTS = [[5, 17, 42, 101, 7, 250, 33, 64, 9, 12, 200], [3, 99, 150, 8, 71, 4]]


def _alone(model: CausalLM, prompt: list[int], n: int) -> list[int]:
    T = len(prompt)
    model.setup_kv_cache(1, T + n)
    logits = model(torch.tensor([prompt]), torch.arange(T).unsqueeze(0), T, last_only=True)
    out = []
    for i in range(n):
        out.append(int(logits[0, -1].argmax()))
        logits = model(torch.tensor([[out[-1]]]), torch.tensor([[T + i]]), T + i + 1)
    model.drop_kv_cache()
    return out


@pytest.mark.parametrize("name", ["llama", "bigcode"])
@torch.no_grad()
def test_batched_rows_decode_what_each_prompt_decodes_alone(name: str, tmp_path: Path) -> None:
    save_hf(name, tmp_path, seed=4)
    model, _ = load_pretrained(tmp_path)
    alone = [_alone(model, p, 10) for p in PROMPTS]
    batch = BatchState(model, max_batch=3, device=torch.device("cpu"), dtype=torch.float32)
    logits = batch.prefill(PROMPTS)
    got: list[list[int]] = [[], []]
    for _ in range(10):
        for row, state in enumerate(batch.rows):
            state.token = int(logits[row].argmax())
            got[row].append(state.token)
        logits = batch.decode()
    assert got == alone
