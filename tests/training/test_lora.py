"""LoRA adapters: a no-op at the start, only adapters train, training lowers held-out loss, merging
keeps the function, and the merged model is an ordinary model file."""

from __future__ import annotations

import pytest
import torch

from codeassist.model.checkpoint import load_model, save_model
from codeassist.model.config import ModelConfig
from codeassist.model.gpt import GPT
from codeassist.training.lora import (
    LoRALinear,
    apply_lora,
    count_parameters,
    has_lora,
    lora_layers,
    merge_lora,
    merged_state_dict,
    wants_lora,
)

CFG = ModelConfig(block_size=64, vocab_size=128, n_layer=2, n_head=2, n_embd=32)


def tiny(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(CFG)
    model.init_weights(seed)
    return model


def test_adapters_start_as_a_no_op_and_only_they_train() -> None:
    model = tiny()
    x = torch.randint(0, CFG.vocab_size, (2, 16))
    before = model(x)
    names = apply_lora(model, rank=4, alpha=8)
    assert len(names) == 4 * CFG.n_layer  # c_attn, attn c_proj, c_fc, mlp c_proj per block
    assert all(isinstance(model.get_submodule(n), LoRALinear) for n in names)
    torch.testing.assert_close(model(x), before)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_a", "lora_b")) for n in trainable)
    assert "lm_head.weight" not in trainable and "transformer.wte.weight" not in trainable


def test_same_seed_same_adapters() -> None:
    a, b = tiny(), tiny()
    apply_lora(a, seed=3)
    apply_lora(b, seed=3)
    for (_, la), (_, lb) in zip(lora_layers(a), lora_layers(b), strict=True):
        assert torch.equal(la.lora_a, lb.lora_a)
    c = tiny()
    apply_lora(c, seed=4)
    assert not torch.equal(lora_layers(a)[0][1].lora_a, lora_layers(c)[0][1].lora_a)


def _batches(seed: int, n: int) -> list[torch.Tensor]:
    # a learnable language: each row counts up from a random start, modulo the vocabulary
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, CFG.vocab_size, (n, 1), generator=g)
    return [(starts[i] + torch.arange(33)) % CFG.vocab_size for i in range(n)]


def _loss(model: GPT, rows: list[torch.Tensor]) -> float:
    with torch.no_grad():
        batch = torch.stack(rows)
        return float(model.loss(batch[:, :-1], batch[:, 1:]))


def test_lora_training_lowers_held_out_loss_and_merges_exactly(tmp_path) -> None:
    model = tiny()
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    apply_lora(model, rank=8, alpha=16)
    train, held = _batches(1, 64), _batches(2, 16)
    start = _loss(model, held)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(60):
        batch = torch.stack(train[(step * 8) % 64:(step * 8) % 64 + 8])
        loss = model.loss(batch[:, :-1], batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    trained = _loss(model, held)
    assert trained < start - 0.15, (start, trained)  # 4.86 -> 4.59 when written
    # the frozen weights did not move
    for name, layer in lora_layers(model):
        torch.testing.assert_close(layer.base.weight, frozen[f"{name}.weight"], rtol=0, atol=0)

    x = torch.stack(held)[:, :-1]
    with torch.no_grad():
        unmerged = model(x)
    state = merged_state_dict(model)
    assert has_lora(model)  # merged_state_dict leaves the model as it was
    merge_lora(model)
    assert not has_lora(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), unmerged, rtol=1e-4, atol=1e-4)
    assert set(state) == set(model.state_dict())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(state[k], v)

    save_model(model, tmp_path / "m.safetensors")  # an ordinary model file
    loaded, _ = load_model(tmp_path / "m.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), unmerged, rtol=1e-4, atol=1e-4)


def test_method_choice() -> None:
    model = tiny()
    assert count_parameters(model) < 1_000_000
    assert not wants_lora(model, "auto") and wants_lora(model, "lora") and not wants_lora(model, "full")
    with pytest.raises(ValueError, match="unknown fine-tuning method"):
        wants_lora(model, "qlora")
    with pytest.raises(ValueError, match="no linear layer"):
        apply_lora(model, targets=r"\.nothing$")


def test_lora_finetune_of_a_tiny_qwen2_through_the_loop_resumes_exactly_and_merges(tmp_path) -> None:
    """The training loop with adapters on a Qwen2-family model: held-out loss falls, a run killed
    mid-way resumes to the same losses and weights bitwise, and the file it writes is the merged
    model, which loads as an ordinary qwen2 model file with the adapted model's logits."""
    import numpy as np

    from codeassist.model.architectures import build_model
    from codeassist.model.llama import LlamaConfig
    from codeassist.training.loop import TrainConfig, evaluate, train

    qcfg = LlamaConfig(family="qwen2", block_size=64, vocab_size=96, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                       head_dim=8, intermediate_size=64, qkv_bias=True, tie_word_embeddings=True)
    cfg = TrainConfig(batch_size=2, seq_len=32, grad_accum=2, max_iters=8, lr=1e-2, min_lr=1e-3, warmup_iters=2,
                      eval_interval=4, eval_batches=2, ckpt_interval=2, seed=5, autocast_bf16=False)
    pattern = np.tile(np.arange(24, dtype=np.uint16) * 5 % 96, 200)
    train_data, held = pattern[:3000], pattern[3000:4000]

    def fresh() -> torch.nn.Module:
        torch.manual_seed(0)
        model = build_model(qcfg)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape) * 0.05 if p.dim() > 1 else torch.ones_like(p))
        apply_lora(model, rank=4, alpha=8, seed=1)
        return model

    class Crash(Exception):
        pass

    def crash_at(step: int):
        def progress(p: dict) -> None:
            if p["step"] == step:
                raise Crash
        return progress

    cpu = torch.device("cpu")
    full = fresh()
    before = evaluate(full, held, cfg, cpu)
    state = train(full, train_data, held, cfg, tmp_path / "a", cpu)
    after = evaluate(full, held, cfg, cpu)
    assert after < before - 0.2, (before, after)  # 4.58 -> 4.32 when written

    with pytest.raises(Crash):
        train(fresh(), train_data, held, cfg, tmp_path / "b", cpu, on_progress=crash_at(5))
    resumed = fresh()
    state_b = train(resumed, train_data, held, cfg, tmp_path / "b", cpu, resume=True)
    assert state_b.losses == state.losses  # bitwise
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k

    loaded, info = load_model(tmp_path / "a" / "model.safetensors")
    assert type(loaded).__name__ == "Llama" and info.config == qcfg and not has_lora(loaded)
    x = torch.from_numpy(held[:33].astype(np.int64)).unsqueeze(0)
    full.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), full(x), rtol=1e-4, atol=1e-4)
