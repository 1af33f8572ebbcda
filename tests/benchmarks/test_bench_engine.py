"""benchmarks/bench_engine.py with no arguments: its code table on the shipped (int8) default model."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest
import torch

from codeassist.model.quantized import is_quantized
from codeassist.model.tokenizer import encode


@pytest.mark.slow
def test_default_model_builds_fp32_int8_and_the_transformers_peer(load_bench: Callable[[str], ModuleType]) -> None:
    """Without --model the code table uses the embedded default, which is int8: the transformers peer
    must be built from its dequantized weights (it crashed on the int8 tensors) and compute exactly
    what our fp32 row computes, while the int8 row is the shipped int8 model itself."""
    bench = load_bench("bench_engine")
    assert bench.DEFAULT_FILE.exists()
    ours, q8, hf, label = bench.shape_models("default", bench.DEFAULT_FILE)
    assert not is_quantized(ours)
    assert q8 is not None and is_quantized(q8)
    assert "default.safetensors" in label
    ids = torch.tensor([encode("def read_lines(path):\n    with open(path) as f:\n        return")])
    with torch.inference_mode():
        expected = ours(ids)
        peer = hf(ids).logits
        shipped = q8(ids)
    torch.testing.assert_close(peer, expected, atol=1e-4, rtol=1e-4)
    # the fp32 weights are the shipped model's: greedy next tokens agree with the int8 model nearly everywhere
    agree = (expected.argmax(-1) == shipped.argmax(-1)).float().mean().item()
    assert agree >= 0.8, agree
