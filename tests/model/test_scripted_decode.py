"""The scripted decode steps of int8 models (model/scripted_decode.py) are the module path bit for
bit, one row or several, are taken only where they apply, and follow new weights."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from codeassist.model import gpt, llama, scripted_decode
from codeassist.model.causal_lm import CausalLM
from codeassist.model.config import ModelConfig
from codeassist.model.gpt import GPT
from codeassist.model.llama import Llama, LlamaConfig, Starcoder2
from codeassist.quantization.quantize import quantize

SHAPES = {
    # Qwen2.5-Coder's layout: q/k/v biases, grouped-query attention, tied head
    "qwen2": LlamaConfig(family="qwen2", vocab_size=96, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, head_dim=16,
                         intermediate_size=96, qkv_bias=True, tie_word_embeddings=True, block_size=128),
    # biases on o and the MLP too, no grouping, linear RoPE scaling (DeepSeek-Coder's), untied head
    "llama_bias": LlamaConfig(family="llama", vocab_size=96, n_layer=2, n_head=4, n_kv_head=4, n_embd=64,
                              head_dim=16, intermediate_size=80, qkv_bias=True, o_bias=True, mlp_bias=True,
                              rope_linear_factor=4.0, rope_theta=100000.0, block_size=128),
    # one key/value head, and head_dim apart from n_embd / n_head (4 x 32 = 128-wide attention)
    "llama_mqa": LlamaConfig(family="llama", vocab_size=96, n_layer=3, n_head=4, n_kv_head=1, n_embd=64,
                             head_dim=32, intermediate_size=128, block_size=128),
    # the embedded default's family (6 x 256 there)
    "gpt2": ModelConfig(block_size=64, vocab_size=96, n_layer=2, n_head=4, n_embd=64, bias=True),
    "gpt2_nobias": ModelConfig(block_size=64, vocab_size=96, n_layer=2, n_head=4, n_embd=64, bias=False),
}


def int8_model(name: str, seed: int = 0) -> CausalLM:
    torch.manual_seed(seed)
    config = SHAPES[name]
    model = (GPT(config) if isinstance(config, ModelConfig) else Llama(config)).eval()
    with torch.no_grad():  # norms start at one: noise, so a swapped norm weight shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return quantize(model, "int8").build(model).eval()


def decode_logits(model: CausalLM, ids: torch.Tensor, start: int) -> list[torch.Tensor]:
    """Prefill ids[:start], then one decode step per remaining token: each step's logits."""
    model.setup_kv_cache(1, 32)
    model(ids[:, :start], input_pos=torch.arange(start).unsqueeze(0), kv_len=start)
    return [model(ids[:, p:p + 1], input_pos=torch.tensor([[p]]), kv_len=p + 1)[0, -1]
            for p in range(start, ids.size(1))]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each step either family offered: True when it ran the scripted function, False when declined."""
    seen: list[bool] = []
    for module, name in ((llama, "llama_step"), (gpt, "gpt2_step")):
        real = getattr(scripted_decode, name)

        def spy(*args: object, real: object = real) -> torch.Tensor | None:
            out = real(*args)  # type: ignore[operator]
            seen.append(out is not None)
            return out  # type: ignore[no-any-return]

        monkeypatch.setattr(module, name, spy)
    return seen


def modules_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llama, "llama_step", lambda *args: None)
    monkeypatch.setattr(gpt, "gpt2_step", lambda *args: None)


@pytest.mark.parametrize("name", sorted(SHAPES))
@torch.inference_mode()
def test_scripted_step_is_the_module_path_bit_for_bit(name: str, calls: list[bool],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    model = int8_model(name)
    ids = torch.randint(0, 96, (1, 14), generator=torch.Generator().manual_seed(1))
    fast = decode_logits(model, ids, 6)
    assert calls == [True] * 8
    function = scripted_decode.gpt2_layers if name.startswith("gpt2") else scripted_decode.llama_layers
    assert isinstance(scripted_decode._scripted(function), torch.jit.ScriptFunction)
    modules_only(monkeypatch)
    for a, b in zip(fast, decode_logits(model, ids, 6), strict=True):
        assert torch.equal(a, b)


def batch_logits(model: CausalLM, ids: torch.Tensor, shared: bool) -> list[torch.Tensor]:
    """Three rows prefilled together, then four steps of one token a row, as the team server's
    batches run them: at one shared position, or each row at its own (stale slots masked)."""
    B = ids.size(0)
    model.setup_kv_cache(B, 32)
    model(ids[:, :6], input_pos=torch.arange(6).unsqueeze(0), kv_len=6)
    out = []
    for step in range(4):
        pos = torch.tensor([[6 + step]]) if shared else torch.tensor([[6 + step], [9 + step], [7 + step]])
        out.append(model(ids[:, 6 + step:7 + step], input_pos=pos, kv_len=int(pos.max()) + 1)[:, -1])
    return out


@pytest.mark.parametrize("shared", [True, False], ids=["shared-position", "own-positions"])
@pytest.mark.parametrize("name", ["gpt2", "qwen2", "llama_bias"])
@torch.inference_mode()
def test_rows_decoding_together_are_the_module_path(name: str, shared: bool, calls: list[bool],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    model = int8_model(name)
    ids = torch.randint(0, 96, (3, 10), generator=torch.Generator().manual_seed(7))
    fast = batch_logits(model, ids, shared)
    assert calls == [True] * 4
    modules_only(monkeypatch)
    for a, b in zip(fast, batch_logits(model, ids, shared), strict=True):
        assert torch.equal(a, b)


@torch.inference_mode()
def test_eager_fallback_when_scripting_fails(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                             calls: list[bool]) -> None:
    model = int8_model("qwen2")
    ids = torch.randint(0, 96, (1, 10), generator=torch.Generator().manual_seed(2))
    want = decode_logits(model, ids, 5)

    def refuse(fn: object) -> object:
        raise RuntimeError("no TorchScript here")

    monkeypatch.setattr(scripted_decode, "_compiled", {})
    monkeypatch.setattr(torch.jit, "script", refuse)
    with caplog.at_level(logging.WARNING, logger="codeassist.model.scripted_decode"):
        got = decode_logits(model, ids, 5)
    assert scripted_decode._compiled == {"llama_layers": scripted_decode.llama_layers}
    assert "running it eagerly" in caplog.text
    assert calls == [True] * 10
    for a, b in zip(want, got, strict=True):
        assert torch.equal(a, b)


@torch.inference_mode()
def test_new_weights_loaded_in_place_rebuild_the_step(calls: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    model, other = int8_model("qwen2", seed=0), int8_model("qwen2", seed=3)
    ids = torch.randint(0, 96, (1, 9), generator=torch.Generator().manual_seed(4))
    before = decode_logits(model, ids, 6)
    model.load_state_dict(other.state_dict())
    after = decode_logits(model, ids, 6)
    assert calls == [True] * 6
    assert not torch.equal(before[0], after[0])
    for a, b in zip(after, decode_logits(other, ids, 6), strict=True):
        assert torch.equal(a, b)


def test_steps_it_does_not_take_run_the_modules(calls: list[bool]) -> None:
    ids = torch.randint(0, 96, (1, 8), generator=torch.Generator().manual_seed(5))
    model = int8_model("qwen2")
    with torch.inference_mode():
        float_model = Llama(SHAPES["qwen2"]).eval()
        decode_logits(float_model, ids, 6)  # float weights
        int4 = quantize(float_model, "int4", group_size=32).build(float_model).eval()
        decode_logits(int4, ids, 6)  # int4 weights
        starcoder2 = Starcoder2(dataclasses.replace(SHAPES["qwen2"], family="starcoder2")).eval()
        decode_logits(quantize(starcoder2, "int8").build(starcoder2).eval(), ids, 6)  # another trunk
    assert calls == [False] * 6
    with torch.no_grad():
        decode_logits(model, ids, 6)  # the one it takes
    assert calls[6:] == [True, True]
    decode_logits(model, ids, 6)  # autograd on: the modules
    assert calls[8:] == [False, False]
    with torch.inference_mode():
        model.train()
        decode_logits(model, ids, 6)
    assert calls[10:] == [False, False]
