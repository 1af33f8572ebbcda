"""The scripted decode step of int8 Llama-family models (model/llama_decode.py) is the module path
bit for bit, is taken only where it applies, and follows new weights."""

from __future__ import annotations

import logging

import pytest
import torch

from codeassist.model import llama, llama_decode
from codeassist.model.llama import Llama, LlamaConfig
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
}


def int8_model(name: str, seed: int = 0) -> Llama:
    torch.manual_seed(seed)
    model = Llama(SHAPES[name]).eval()
    with torch.no_grad():  # norms start at one: noise, so a swapped norm weight shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return quantize(model, "int8").build(model).eval()


def decode_logits(model: Llama, ids: torch.Tensor, start: int) -> list[torch.Tensor]:
    """Prefill ids[:start], then one decode step per remaining token: each step's logits."""
    model.setup_kv_cache(1, 32)
    model(ids[:, :start], input_pos=torch.arange(start).unsqueeze(0), kv_len=start)
    return [model(ids[:, p:p + 1], input_pos=torch.tensor([[p]]), kv_len=p + 1)[0, -1]
            for p in range(start, ids.size(1))]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each decode_step call: True when it ran the scripted step, False when it declined."""
    seen: list[bool] = []
    real = llama_decode.decode_step

    def spy(*args: object) -> torch.Tensor | None:
        out = real(*args)  # type: ignore[arg-type]
        seen.append(out is not None)
        return out

    monkeypatch.setattr(llama, "decode_step", spy)
    return seen


def modules_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llama, "decode_step", lambda *args: None)


@pytest.mark.parametrize("name", sorted(SHAPES))
@torch.inference_mode()
def test_scripted_step_is_the_module_path_bit_for_bit(name: str, calls: list[bool],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    model = int8_model(name)
    ids = torch.randint(0, 96, (1, 14), generator=torch.Generator().manual_seed(1))
    fast = decode_logits(model, ids, 6)
    assert calls == [True] * 8
    assert isinstance(llama_decode._decode_layers(), torch.jit.ScriptFunction)
    modules_only(monkeypatch)
    for a, b in zip(fast, decode_logits(model, ids, 6), strict=True):
        assert torch.equal(a, b)


@torch.inference_mode()
def test_eager_fallback_when_scripting_fails(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                                             calls: list[bool]) -> None:
    model = int8_model("qwen2")
    ids = torch.randint(0, 96, (1, 10), generator=torch.Generator().manual_seed(2))
    want = decode_logits(model, ids, 5)

    def refuse(fn: object) -> object:
        raise RuntimeError("no TorchScript here")

    monkeypatch.setattr(llama_decode, "_compiled", [])
    monkeypatch.setattr(torch.jit, "script", refuse)
    with caplog.at_level(logging.WARNING, logger="codeassist.model.llama_decode"):
        got = decode_logits(model, ids, 5)
    assert llama_decode._compiled == [llama_decode.decode_layers]
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
        model.setup_kv_cache(2, 32)  # two rows decoding together
        model(ids[:, :1].repeat(2, 1), input_pos=torch.tensor([[0]]), kv_len=1)
    assert calls == [False] * 5
    with torch.no_grad():
        decode_logits(model, ids, 6)  # the one it takes
    assert calls[5:] == [True, True]
    decode_logits(model, ids, 6)  # autograd on: the modules
    assert calls[7:] == [False, False]
