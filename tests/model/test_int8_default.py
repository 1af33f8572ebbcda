"""The shipped default model runs as int8 through the engine: never dequantized to floats.

A model that was silently turned back into float weights would still complete code, only
slower and four times larger in memory, so the tests look at what ran: the module types after
loading, and which matmul each quantized layer used while generating.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from codeassist.model import quant_layers as quantized
from codeassist.model import scripted_decode
from codeassist.model import tokenizer as tok
from codeassist.model.engine import Engine, GenerationRequest, StopRules
from codeassist.model.quantized import Int8Embedding, Int8Linear, TiedHead
from codeassist.model.speculative import SpeculationParams
from codeassist.remote.batch import BatchState


def assert_int8_modules(engine: Engine) -> None:
    """Every matrix of the default model is held as int8: block linears, the tied table, the head."""
    model = engine.model
    assert not [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    linears = [m for m in model.modules() if type(m) is Int8Linear]
    assert len(linears) == 4 * model.config.n_layer
    assert isinstance(model.transformer.wte, Int8Embedding) and isinstance(model.lm_head, TiedHead)
    for m in [*linears, model.transformer.wte]:
        assert isinstance(m, Int8Linear)
        assert m.qweight.dtype == torch.int8 and m._dequantized is None


@pytest.fixture
def reference_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Each call of the dequantized fallback matmul, by layer type (there should be none)."""
    calls: list[str] = []
    fallback = quantized._reference_linear

    def counting(layer: Any, x: torch.Tensor) -> torch.Tensor:
        calls.append(type(layer).__name__)
        return fallback(layer, x)

    monkeypatch.setattr(quantized, "_reference_linear", counting)
    yield calls


@pytest.fixture
def int8_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many int8 matmuls ran through the packed int8 kernel (quantized::linear_dynamic)."""
    calls = [0]
    ops = torch.ops.quantized

    class CountingOps:
        def __getattr__(self, name: str) -> Any:
            return getattr(ops, name)  # linear_prepack and the rest, unchanged

        @staticmethod
        def linear_dynamic(*args: Any) -> torch.Tensor:
            calls[0] += 1
            out: torch.Tensor = ops.linear_dynamic(*args)
            return out

    monkeypatch.setattr(torch.ops, "quantized", CountingOps())
    # TorchScript cannot compile the decode step against this Python stand-in, so the step runs
    # eagerly (and is counted) here; the eager stand-in is forgotten after the test
    monkeypatch.setattr(scripted_decode, "_compiled", {})
    return calls


def test_the_default_model_generates_with_int8_kernels(reference_calls: list[str], int8_calls: list[int]) -> None:
    engine = Engine.load("default", device="cpu")
    assert engine.info is not None and engine.info.quantization["scheme"] == "int8"
    assert_int8_modules(engine)
    prompt = (tok.EOT_ID, *tok.encode("def read_lines(path):\n    with open(path) as f:\n        return"))
    stop = StopRules(max_new_tokens=6, stop_on_eos=False)
    one = engine.generate(GenerationRequest(prompt=prompt, stop=stop))
    spec = engine.generate(GenerationRequest(prompt=prompt, stop=stop,
                                             speculation=SpeculationParams(method="prompt_lookup")))
    # the batch path (the team server's rows): a right-padded prefill of two prompts, 5 decode steps
    batch = BatchState(engine.model, 2, engine.device, engine.dtype, engine.context_tokens)
    rows = [batch.prefill([list(prompt), list(prompt[:-3])]).argmax(-1).tolist()]
    for _ in range(5):
        for row, token in zip(batch.rows, rows[-1], strict=True):
            row.token = token
        rows.append(batch.decode().argmax(-1).tolist())
    batch.close()
    assert len(one.tokens) == len(spec.tokens) == 6 and [len(r) for r in zip(*rows, strict=True)] == [6, 6]
    assert reference_calls == []  # no layer fell back to dequantized weights
    # every forward pass ran the 24 block linears and the head through the int8 kernel
    passes = 6 + 1 + 2  # decode steps and prefills, at least, of the three generations
    assert int8_calls[0] >= (4 * engine.config.n_layer + 1) * passes
    assert_int8_modules(engine)  # and nothing was dequantized on the way
