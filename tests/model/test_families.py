"""The Llama (llama, qwen2) and GPTBigCode families against transformers, on tiny random models
that transformers builds and saves inside the test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from codeassist.model.causal_lm import CausalLM
from codeassist.model.checkpoint import ModelFileError, load_model, read_info, save_model
from codeassist.model.families import family_of, is_hf_folder, load_pretrained
from tests.model.family_models import SPECS, VOCAB, build_hf, save_hf

FAMILIES = list(SPECS)
TOL = 1e-4


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    out = {}
    for i, name in enumerate(FAMILIES):
        folder = tmp_path_factory.mktemp(name)
        out[name] = (folder, save_hf(name, folder, seed=i))
    return out


def _prompt(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, VOCAB, (1, n), generator=torch.Generator().manual_seed(seed))


def _greedy(model: CausalLM, prompt: torch.Tensor, n: int) -> list[int]:
    """Greedy decoding through the KV cache: one prefill, then one token at a time."""
    T = prompt.size(1)
    model.setup_kv_cache(1, T + n)
    logits = model(prompt, torch.arange(T).unsqueeze(0), T, last_only=True)
    out = []
    for i in range(n):
        tok = int(logits[0, -1].argmax())
        out.append(tok)
        pos = T + i
        logits = model(torch.tensor([[tok]]), torch.tensor([[pos]]), pos + 1)
    model.drop_kv_cache()
    return out


@pytest.mark.parametrize("name", FAMILIES)
@torch.no_grad()
def test_logits_equal_transformers(name: str, folders: dict[str, tuple[Path, Any]]) -> None:
    folder, hf = folders[name]
    model, config = load_pretrained(folder)
    assert model.config == config and config.vocab_size == VOCAB
    x = _prompt(23, seed=1)
    ref = hf(x).logits
    torch.testing.assert_close(model(x), ref, atol=TOL, rtol=0)
    # prefill 15 through the cache, then decode the other 8 one by one
    model.setup_kv_cache(1, 64)
    got = [model(x[:, :15], torch.arange(15).unsqueeze(0), 15)]
    for p in range(15, 23):
        got.append(model(x[:, p:p + 1], torch.tensor([[p]]), p + 1))
    torch.testing.assert_close(torch.cat(got, dim=1), ref, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
@torch.no_grad()
def test_greedy_equals_transformers_generate(name: str, folders: dict[str, tuple[Path, Any]]) -> None:
    folder, hf = folders[name]
    model, _ = load_pretrained(folder)
    x = _prompt(9, seed=2)
    ref = hf.generate(x, max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0,
                      min_new_tokens=20)[0, 9:].tolist()
    assert len(ref) == 20
    assert _greedy(model, x, 20) == ref


@pytest.mark.parametrize("name", FAMILIES)
@torch.no_grad()
def test_right_padded_batch_equals_each_alone(name: str, folders: dict[str, tuple[Path, Any]]) -> None:
    model, _ = load_pretrained(folders[name][0])
    a, b = _prompt(11, seed=3)[0].tolist(), _prompt(6, seed=4)[0].tolist()
    alone = []
    for p in (a, b):
        model.setup_kv_cache(1, 32)
        x = torch.tensor([p])
        first = model.last_token_logits(x, torch.arange(len(p)).unsqueeze(0), len(p), [len(p)])[0]
        step = model(torch.tensor([[7]]), torch.tensor([[len(p)]]), len(p) + 1)[0, -1]
        alone.append((first, step))
    model.setup_kv_cache(2, 32)
    x = torch.tensor([a, b + [0] * (len(a) - len(b))])  # right-padded
    both = model.last_token_logits(x, torch.arange(len(a)).unsqueeze(0), len(a), [len(a), len(b)])
    # one decode step with the rows at different positions: the masked general case
    steps = model(torch.tensor([[7], [7]]), torch.tensor([[len(a)], [len(b)]]), len(a) + 1)[:, -1]
    for row in range(2):
        torch.testing.assert_close(both[row], alone[row][0], atol=TOL, rtol=0)
        torch.testing.assert_close(steps[row], alone[row][1], atol=TOL, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
@torch.no_grad()
def test_prefix_reuse_equals_a_cold_run(name: str, folders: dict[str, tuple[Path, Any]]) -> None:
    model, _ = load_pretrained(folders[name][0])
    first = _prompt(20, seed=5)
    model.setup_kv_cache(1, 48)
    model(first, torch.arange(20).unsqueeze(0), 20)
    # keep slots 0..11, continue with 9 new tokens at 12.. (slots 12..19 hold stale keys)
    new = _prompt(9, seed=6)
    reused = model(new, torch.arange(12, 21).unsqueeze(0), 21)
    cold_ids = torch.cat([first[:, :12], new], dim=1)
    model.setup_kv_cache(1, 48)
    cold = model(cold_ids, torch.arange(21).unsqueeze(0), 21)[:, 12:]
    torch.testing.assert_close(reused, cold, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["llama", "qwen2", "bigcode"])
def test_training_loss_equals_transformers_and_backpropagates(name: str,
                                                              folders: dict[str, tuple[Path, Any]]) -> None:
    folder, hf = folders[name]
    model, _ = load_pretrained(folder)
    model.train()
    x = _prompt(20, seed=12)
    with torch.no_grad():
        ref = hf(x, labels=x).loss  # transformers shifts the labels itself
    loss = model.loss(x[:, :-1], x[:, 1:])
    torch.testing.assert_close(loss.detach(), ref, atol=TOL, rtol=0)
    targets = x[:, 1:].clone()
    targets[0, :5] = -1  # skipped
    model.loss(x[:, :-1], targets).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@torch.no_grad()
def test_transformers_4_config_layout_loads_the_same(tmp_path: Path,
                                                     folders: dict[str, tuple[Path, Any]]) -> None:
    """Released checkpoints (Qwen2.5-Coder, DeepSeek-Coder) write rope_theta and rope_scaling at the top."""
    src = folders["llama_tied_bias"][0]
    raw = json.loads((src / "config.json").read_text())
    rope = raw.pop("rope_parameters")
    raw.update(rope_theta=rope["rope_theta"], rope_scaling={"type": "linear", "factor": rope["factor"]})
    (tmp_path / "config.json").write_text(json.dumps(raw))
    (tmp_path / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    old, old_config = load_pretrained(tmp_path)
    new, new_config = load_pretrained(src)
    assert old_config == new_config and old_config.rope_linear_factor == 4.0
    x = _prompt(30, seed=13)
    torch.testing.assert_close(old(x), new(x), atol=0, rtol=0)


def test_tied_and_untied_heads(folders: dict[str, tuple[Path, Any]]) -> None:
    tied, _ = load_pretrained(folders["qwen2"][0])
    untied, _ = load_pretrained(folders["llama"][0])
    assert tied.tied_embeddings and tied.lm_head.weight is tied.model.embed_tokens.weight  # type: ignore[union-attr]
    assert not untied.tied_embeddings
    assert untied.lm_head.weight is not untied.model.embed_tokens.weight  # type: ignore[union-attr]
    assert not torch.equal(untied.lm_head.weight, untied.model.embed_tokens.weight)  # type: ignore[union-attr,arg-type]


def test_grouped_query_cache_holds_only_the_kv_heads(folders: dict[str, tuple[Path, Any]]) -> None:
    for name, kv_heads in (("llama", 2), ("qwen2", 2), ("starcoder2", 2), ("bigcode", 1), ("bigcode_mha", 4)):
        model, config = load_pretrained(folders[name][0])
        model.setup_kv_cache(3, 40)
        caches = [attn.kv_cache for attn in model.attention_layers()]
        assert len(caches) == config.n_layer
        assert caches[0].k.shape == (3, kv_heads, 40, config.head_dim)
        assert [b.attn.kv_cache for b in model.transformer.blocks()] == caches  # what the batcher swaps


@torch.no_grad()
def test_sharded_folder_loads_the_same(tmp_path: Path, folders: dict[str, tuple[Path, Any]]) -> None:
    hf = build_hf("qwen2", seed=FAMILIES.index("qwen2"))  # the fixture's qwen2 seed
    hf.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    sharded, _ = load_pretrained(tmp_path)
    single, _ = load_pretrained(folders["qwen2"][0])
    x = _prompt(12, seed=7)
    torch.testing.assert_close(sharded(x), single(x), atol=0, rtol=0)


def test_sharded_index_problems_are_one_sentence(tmp_path: Path) -> None:
    build_hf("qwen2").save_pretrained(tmp_path, max_shard_size="40KB")
    index = tmp_path / "model.safetensors.index.json"
    raw = json.loads(index.read_text())
    first = sorted(set(raw["weight_map"].values()))[0]
    (tmp_path / first).unlink()
    with pytest.raises(ModelFileError) as exc:
        load_pretrained(tmp_path)
    assert first in _one_sentence(exc)
    raw["weight_map"] = {k: "../elsewhere.safetensors" for k in raw["weight_map"]}
    index.write_text(json.dumps(raw))
    with pytest.raises(ModelFileError) as exc:
        load_pretrained(tmp_path)
    assert "outside its folder" in _one_sentence(exc)
    index.write_text("{not json")
    with pytest.raises(ModelFileError) as exc:
        load_pretrained(tmp_path)
    assert "damaged" in _one_sentence(exc)


def test_family_comes_from_config_json_not_the_name(tmp_path: Path) -> None:
    folder = tmp_path / "starcoder-not-really"
    save_hf("qwen2", folder)
    assert is_hf_folder(folder) and not is_hf_folder(folder / "config.json")
    assert family_of(folder) == "qwen2"
    model, config = load_pretrained(folder)
    assert config.family == "qwen2" and type(model).__name__ == "Llama"


@torch.no_grad()
def test_gpt2_folders_go_through_our_gpt(tmp_path: Path) -> None:
    import transformers

    from codeassist.model.gpt import GPT

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, n_positions=64))
    hf.eval().save_pretrained(tmp_path)
    model, config = load_pretrained(tmp_path)
    assert isinstance(model, GPT) and family_of(tmp_path) == "gpt2" and config.block_size == 64
    x = _prompt(12, seed=11)
    ref = hf(x).logits
    torch.testing.assert_close(model(x)[..., :ref.size(-1)], ref, atol=TOL, rtol=0)


def test_starcoder2_context_is_capped_at_its_sliding_window(tmp_path: Path) -> None:
    save_hf("starcoder2", tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["sliding_window"] = 64
    (tmp_path / "config.json").write_text(json.dumps(raw))
    _, config = load_pretrained(tmp_path)
    assert config.block_size == 64  # max_position_embeddings is 128; past 64 tokens the window would bite


def _one_sentence(exc: pytest.ExceptionInfo[ModelFileError]) -> str:
    text = str(exc.value)
    assert text and "\n" not in text and "Traceback" not in text
    return text


def test_unknown_model_type_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba", "vocab_size": 10}))
    with pytest.raises(ModelFileError) as exc:
        load_pretrained(tmp_path)
    text = _one_sentence(exc)
    assert "'mamba'" in text and "qwen2" in text and "gpt_bigcode" in text


def test_unsupported_rope_is_one_sentence(tmp_path: Path) -> None:
    save_hf("llama", tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["rope_parameters"] = {"rope_type": "llama3", "factor": 8.0, "rope_theta": 500000.0}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ModelFileError) as exc:
        load_pretrained(tmp_path)
    assert "llama3" in _one_sentence(exc)


def test_missing_and_extra_tensors_are_one_sentence(tmp_path: Path) -> None:
    save_hf("llama", tmp_path)
    path = tmp_path / "model.safetensors"
    tensors = load_file(path)
    gone = "model.layers.1.mlp.up_proj.weight"
    save_file({k: v for k, v in tensors.items() if k != gone}, path, metadata={"format": "pt"})
    with pytest.raises(ModelFileError) as exc:
        load_pretrained(tmp_path)
    assert gone in _one_sentence(exc)
    save_file({**tensors, "model.layers.9.extra.weight": torch.zeros(2)}, path, metadata={"format": "pt"})
    with pytest.raises(ModelFileError) as exc:
        load_pretrained(tmp_path)
    assert "model.layers.9.extra.weight" in _one_sentence(exc)


def test_damaged_safetensors_is_one_sentence(tmp_path: Path) -> None:
    save_hf("bigcode", tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError) as exc:
        load_pretrained(tmp_path)
    assert "truncated" in _one_sentence(exc)
    path.write_bytes(b"\x80\x04garbage" * 10)
    with pytest.raises(ModelFileError) as exc:
        load_pretrained(tmp_path)
    _one_sentence(exc)
    path.unlink()
    with pytest.raises(ModelFileError) as exc:
        load_pretrained(tmp_path)
    assert "model.safetensors" in _one_sentence(exc)


@pytest.mark.parametrize("name", ["llama", "qwen2", "starcoder2", "bigcode"])
@torch.no_grad()
def test_our_model_file_round_trip(name: str, tmp_path: Path, folders: dict[str, tuple[Path, Any]]) -> None:
    model, config = load_pretrained(folders[name][0])
    tok_meta = {"tokenizer": "hf", "tokenizer_json": '{"model": {}}', "template": "qwen"}
    path = tmp_path / "m.safetensors"
    save_model(model, path, provenance={"data": "test"}, tokenizer=tok_meta)
    info = read_info(path)
    assert info.family == config.family and info.config == config and info.tokenizer == "hf"
    assert info.meta["tokenizer_json"] == tok_meta["tokenizer_json"] and info.tokenizer_meta == tok_meta
    loaded, _ = load_model(path)
    assert type(loaded) is type(model)
    x = _prompt(14, seed=8)
    torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    if config.tie_word_embeddings:  # stored once
        assert loaded.lm_head.weight is loaded.get_submodule(loaded.EMBEDDING).weight


def test_tokenizer_metadata_cannot_replace_the_files_own_keys(tmp_path: Path,
                                                               folders: dict[str, tuple[Path, Any]]) -> None:
    model, _ = load_pretrained(folders["qwen2"][0])
    with pytest.raises(ValueError):
        save_model(model, tmp_path / "m.safetensors", tokenizer={"tokenizer": "hf", "config": "{}"})


@torch.no_grad()
def test_bf16_weights_keep_the_cache_and_rope_in_bf16(folders: dict[str, tuple[Path, Any]]) -> None:
    model, _ = load_pretrained(folders["qwen2"][0], dtype=torch.bfloat16)
    float_model, _ = load_pretrained(folders["qwen2"][0])
    assert model.anchor.dtype == torch.bfloat16
    x = _prompt(10, seed=9)
    model.setup_kv_cache(1, 16)
    got = model(x, torch.arange(10).unsqueeze(0), 10)
    assert got.dtype == torch.bfloat16
    assert model.attention_layers()[0].kv_cache.k.dtype == torch.bfloat16
    ref = float_model(x)
    assert (got.float().argmax(-1) == ref.argmax(-1)).float().mean() >= 0.8


@pytest.mark.gpu
@torch.no_grad()
def test_cuda_bf16_matches_transformers_and_quantizes(folders: dict[str, tuple[Path, Any]]) -> None:
    """A GPU check: weights, RoPE tables and caches on CUDA in bf16; int8 and int4 kernels there."""
    if not torch.cuda.is_available():
        pytest.skip("GPU check: needs CUDA; run it on a machine with a GPU (pytest -m gpu)")
    import copy

    from codeassist.quantization.quantize import quantize

    for name in ("qwen2", "llama", "bigcode"):
        folder, hf = folders[name]
        model, _ = load_pretrained(folder, device="cuda", dtype=torch.bfloat16)
        hf_gpu = copy.deepcopy(hf).to("cuda", torch.bfloat16)
        x = _prompt(23, seed=1).cuda()
        ref = hf_gpu(x).logits.float()
        full = model(x).float()
        assert (full - ref).abs().max() < 0.05 * ref.abs().max(), name
        model.setup_kv_cache(1, 32)
        assert model.attention_layers()[0].kv_cache.k.device.type == "cuda"
        steps = [model(x[:, :15], torch.arange(15, device="cuda").unsqueeze(0), 15)]
        for p in range(15, 23):
            steps.append(model(x[:, p:p + 1], torch.tensor([[p]], device="cuda"), p + 1))
        cached = torch.cat(steps, dim=1).float()
        assert (cached - full).abs().max() < 0.05 * full.abs().max(), name
        float_cpu, _ = load_pretrained(folder)
        for method in ("int8", "int4"):
            q = quantize(float_cpu, method, group_size=32).build(float_cpu).to("cuda", torch.bfloat16)
            got = q(x).float()
            assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.7, (name, method)
