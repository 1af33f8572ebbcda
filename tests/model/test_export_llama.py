"""Exports of the open families: tiny random qwen2, llama and gpt_bigcode models built by transformers
here, with a tiny byte-level BPE tokenizer (Qwen2.5's pre-tokenizer layout) built by `tokenizers`."""

from __future__ import annotations

import inspect
import json
import json.decoder
import shutil
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch

from codeassist.model.checkpoint import save_model
from codeassist.model.export import export_model
from codeassist.model.export_llama import TokenizerExportError, permute_rope
from codeassist.model.families import load_pretrained
from codeassist.model.hf_tokenizer import HFTokenizer
from tests.model.family_models import save_hf

QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>"]
TEXT = "def main(argv):\n    return  json.loads(argv[1])  # café\n"


def save_tokenizer(folder: Path, split: str = QWEN_SPLIT) -> None:
    """Qwen2.5's layout: a Split regex then ByteLevel without its own regex; 284 tokens + 2 added."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=284, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator([inspect.getsource(json.decoder)], trainer)
    # as in Qwen2.5's file: a marker added without the special flag, and an added text token
    tk.add_tokens([AddedToken("<|file_sep|>", special=False, normalized=False),
                   AddedToken("hello world", special=False, normalized=False)])
    tk.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|endoftext|>", "bos_token": None, "add_bos_token": False,
         "tokenizer_class": "PreTrainedTokenizerFast"}))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": tk.token_to_id("<|endoftext|>")}))


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """family spec -> (HF folder, the transformers model saved there)."""
    out = {}
    for name in ("qwen2", "llama"):
        folder = tmp_path_factory.mktemp(name)
        hf = save_hf(name, folder)
        save_tokenizer(folder)
        out[name] = (folder, hf)
    return out


def ids_of(folder: Path) -> torch.Tensor:
    return torch.tensor([HFTokenizer.from_folder(folder).encode(TEXT)])


@pytest.mark.parametrize("name", ["qwen2", "llama"])
def test_hf_export_loads_in_transformers_with_the_same_logits(folders: dict[str, tuple[Path, Any]],
                                                               tmp_path: Path, name: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, original = folders[name]
    out = export_model(folder, "hf", tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == name
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).read_bytes() == (folder / name).read_bytes()
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = ids_of(folder)
    with torch.no_grad():
        assert torch.allclose(exported(ids).logits, original(ids).logits, atol=1e-4, rtol=0)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok(TEXT, add_special_tokens=False)["input_ids"] == ids[0].tolist()


def test_hf_export_of_a_model_file_rebuilds_its_tokenizer(folders: dict[str, tuple[Path, Any]],
                                                          tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    folder, original = folders["qwen2"]
    model, _ = load_pretrained(folder)
    save_model(model, tmp_path / "q.safetensors", tokenizer=HFTokenizer.from_folder(folder).to_metadata())
    out = export_model(tmp_path / "q.safetensors", "hf", tmp_path / "out")
    config = json.loads((out / "config.json").read_text())
    eos = HFTokenizer.from_folder(folder).special_id("<|endoftext|>")
    assert config["eos_token_id"] == eos and config["tie_word_embeddings"] is True
    assert json.loads((out / "tokenizer_config.json").read_text())["eos_token"] == "<|endoftext|>"
    tok = PreTrainedTokenizerFast(tokenizer_file=str(out / "tokenizer.json"))
    ids = ids_of(folder)
    assert tok(TEXT, add_special_tokens=False)["input_ids"] == ids[0].tolist()
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.allclose(exported(ids).logits, original(ids).logits, atol=1e-4, rtol=0)


def gguf_tensors(path: Path) -> tuple[gguf.GGUFReader, dict[str, np.ndarray]]:
    reader = gguf.GGUFReader(str(path))
    return reader, {t.name: np.asarray(t.data).reshape(list(reversed(t.shape.tolist()))) for t in reader.tensors}


def test_gguf_qwen2_has_llama_cpp_names_keys_and_vocabulary(folders: dict[str, tuple[Path, Any]],
                                                           tmp_path: Path) -> None:
    folder, original = folders["qwen2"]
    reader, tensors = gguf_tensors(export_model(folder, "gguf", tmp_path / "q.gguf"))
    c = original.config

    def key(k: str) -> Any:
        return reader.fields[k].contents()

    assert key("general.architecture") == "qwen2"
    assert key("qwen2.block_count") == c.num_hidden_layers
    assert key("qwen2.context_length") == c.max_position_embeddings
    assert key("qwen2.embedding_length") == c.hidden_size
    assert key("qwen2.feed_forward_length") == c.intermediate_size
    assert key("qwen2.attention.head_count") == c.num_attention_heads
    assert key("qwen2.attention.head_count_kv") == c.num_key_value_heads
    assert key("qwen2.rope.freq_base") == pytest.approx(c.rope_parameters["rope_theta"]
                                                        if getattr(c, "rope_parameters", None) else c.rope_theta)
    assert key("qwen2.attention.layer_norm_rms_epsilon") == pytest.approx(c.rms_norm_eps)
    assert key("tokenizer.ggml.model") == "gpt2" and key("tokenizer.ggml.pre") == "qwen2"

    spec = json.loads((folder / "tokenizer.json").read_text())
    tokens = key("tokenizer.ggml.tokens")
    assert len(tokens) == c.vocab_size
    for t, i in spec["model"]["vocab"].items():
        assert tokens[i] == t
    assert len(key("tokenizer.ggml.merges")) == len(spec["model"]["merges"])
    eot = spec["model"]["vocab"].get("<|endoftext|>", next(t["id"] for t in spec["added_tokens"]
                                                               if t["content"] == "<|endoftext|>"))
    assert key("tokenizer.ggml.eos_token_id") == eot
    types = key("tokenizer.ggml.token_type")
    assert types[eot] == gguf.TokenType.CONTROL
    assert types[tokens.index("<|file_sep|>")] == gguf.TokenType.CONTROL  # added unflagged, looks special
    assert types[tokens.index("hello world")] == gguf.TokenType.USER_DEFINED
    assert types[spec["model"]["vocab"]["Ġ"]] == gguf.TokenType.NORMAL
    assert tokens[-1] == f"[PAD{c.vocab_size - 1}]"
    assert key("tokenizer.ggml.fim_mid_token_id") == tokens.index("<|fim_middle|>")

    sd = original.state_dict()
    assert "output.weight" not in tensors  # tied: llama.cpp reads token_embd
    pairs = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "blk.1.attn_q.weight": "model.layers.1.self_attn.q_proj.weight",
             "blk.1.attn_q.bias": "model.layers.1.self_attn.q_proj.bias",
             "blk.0.attn_k.weight": "model.layers.0.self_attn.k_proj.weight",
             "blk.0.attn_v.bias": "model.layers.0.self_attn.v_proj.bias",
             "blk.0.ffn_gate.weight": "model.layers.0.mlp.gate_proj.weight",
             "blk.1.ffn_norm.weight": "model.layers.1.post_attention_layernorm.weight",
             "blk.1.attn_norm.weight": "model.layers.1.input_layernorm.weight"}
    for name, hf_name in pairs.items():
        np.testing.assert_array_equal(tensors[name], sd[hf_name].numpy())


def test_gguf_llama_permutes_q_and_k_for_llama_cpp_rope(folders: dict[str, tuple[Path, Any]],
                                                       tmp_path: Path) -> None:
    folder, original = folders["llama"]
    reader, tensors = gguf_tensors(export_model(folder, "gguf", tmp_path / "l.gguf"))
    c = original.config
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["llama.rope.dimension_count"].contents() == c.hidden_size // c.num_attention_heads
    sd = original.state_dict()
    np.testing.assert_array_equal(tensors["output.weight"], sd["lm_head.weight"].numpy())  # untied
    q, k = sd["model.layers.0.self_attn.q_proj.weight"], sd["model.layers.0.self_attn.k_proj.weight"]
    np.testing.assert_array_equal(tensors["blk.0.attn_q.weight"], permute_rope(q, c.num_attention_heads).numpy())
    np.testing.assert_array_equal(tensors["blk.0.attn_k.weight"], permute_rope(k, c.num_key_value_heads).numpy())
    np.testing.assert_array_equal(tensors["blk.0.attn_v.weight"],
                                  sd["model.layers.0.self_attn.v_proj.weight"].numpy())

    # what the permutation is for: HF's rotate-half RoPE on q equals llama.cpp's pairwise RoPE on
    # the permuted q, row for row after the same permutation
    hs, theta = c.hidden_size // c.num_attention_heads, 10000.0
    x = torch.randn(8, c.hidden_size)
    angle = 3.0 / theta ** (torch.arange(0, hs, 2).float() / hs)  # position 3
    cos, sin = angle.cos(), angle.sin()
    qh = (x @ q.T).view(8, -1, hs)
    half = torch.cat([qh[..., : hs // 2] * cos - qh[..., hs // 2:] * sin,
                      qh[..., hs // 2:] * cos + qh[..., : hs // 2] * sin], dim=-1)  # HF
    qp = (x @ torch.from_numpy(tensors["blk.0.attn_q.weight"].copy()).T).view(8, -1, hs // 2, 2)
    pairs = torch.stack([qp[..., 0] * cos - qp[..., 1] * sin, qp[..., 0] * sin + qp[..., 1] * cos], dim=-1)
    want = permute_rope(half.reshape(8, -1).T, c.num_attention_heads).T
    assert torch.allclose(pairs.reshape(8, -1), want, atol=1e-5)


def test_pre_tokenizers_are_named_on_all_their_steps() -> None:
    from codeassist.model.export_llama import pre_tokenizer_name

    def spec(*steps: dict[str, Any]) -> dict[str, Any]:
        return {"pre_tokenizer": {"type": "Sequence", "pretokenizers": list(steps)}}

    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    digits = {"type": "Digits", "individual_digits": True}
    assert pre_tokenizer_name({"pre_tokenizer": byte_level}) == "gpt-2"
    assert pre_tokenizer_name(spec(digits, byte_level)) == "starcoder"  # StarCoder: one digit a piece
    qwen = {"type": "Split", "pattern": {"Regex": QWEN_SPLIT}, "behavior": "Isolated", "invert": False}
    assert pre_tokenizer_name(spec(qwen, {**byte_level, "use_regex": False})) == "qwen2"
    for unknown in (spec({**digits, "individual_digits": False}, byte_level),  # digit runs: not GPT-2's
                    spec(qwen, byte_level),  # the split, then GPT-2's regex again
                    spec({**qwen, "behavior": "Removed"}, {**byte_level, "use_regex": False})):
        with pytest.raises(TokenizerExportError, match=r"not one llama\.cpp knows"):
            pre_tokenizer_name(unknown)


def test_a_tokenizer_llama_cpp_cannot_name_is_refused_for_gguf(tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    save_hf("qwen2", folder)
    save_tokenizer(folder, split=r"\p{L}+|\s+|.")
    with pytest.raises(TokenizerExportError, match=r"not one llama\.cpp knows by name") as exc:
        export_model(folder, "gguf", tmp_path / "odd.gguf")
    assert "\n" not in str(exc.value) and not (tmp_path / "odd.gguf").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["odd"]


@pytest.mark.parametrize("name", ["bigcode", "bigcode_mha"])
def test_starcoder_exports_to_hf_and_to_llama_cpps_starcoder_arch(tmp_path: Path, name: str) -> None:
    # multi-query (StarCoder's) and per-head interleaved q, k, v (without multi_query), which llama.cpp
    # reads as [q | k | v]: the GGUF forward must give transformers' logits for both
    from transformers import AutoModelForCausalLM

    from tests.model.gguf_reference import forward

    folder = tmp_path / name
    folder.mkdir()
    original = save_hf(name, folder)
    save_tokenizer(folder)
    ids = ids_of(folder)
    with torch.no_grad():
        want = original(ids).logits
    exported = AutoModelForCausalLM.from_pretrained(export_model(folder, "hf", tmp_path / "hf")).eval()
    with torch.no_grad():
        assert torch.allclose(exported(ids).logits, want, atol=1e-4, rtol=0)
    out = export_model(folder, "gguf", tmp_path / "sc.gguf")
    reader, tensors = gguf_tensors(out)
    assert reader.fields["general.architecture"].contents() == "starcoder"
    kv_heads = 1 if original.config.multi_query else original.config.n_head
    assert reader.fields["starcoder.attention.head_count_kv"].contents() == kv_heads
    assert "blk.0.attn_qkv.bias" in tensors and "position_embd.weight" in tensors
    np.testing.assert_allclose(forward(out, ids[0].tolist()), want[0].numpy(), atol=1e-4, rtol=0)


def test_an_int8_qwen2_model_file_exports_dequantized(folders: dict[str, tuple[Path, Any]],
                                                      tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from codeassist.model.checkpoint import load_model
    from codeassist.model.quantized import dequantize_model, is_quantized
    from codeassist.quantization.quantize import quantize

    folder, _ = folders["qwen2"]
    model, _ = load_pretrained(folder)
    quantize(model, "int8").save(model, tmp_path / "q8.safetensors",
                                 tokenizer=HFTokenizer.from_folder(folder).to_metadata())
    int8, info = load_model(tmp_path / "q8.safetensors")
    assert info.scheme == "int8" and is_quantized(int8)
    out = export_model(tmp_path / "q8.safetensors", "hf", tmp_path / "out")
    exported = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = ids_of(folder)
    with torch.no_grad():
        want = dequantize_model(int8)(ids)
        assert torch.allclose(exported(ids).logits, want, atol=1e-4, rtol=0)
        assert not torch.allclose(want, model(ids), atol=1e-4, rtol=0)  # the int8 weights, not the originals


def test_an_hf_spec_exports_from_the_hub_cache_offline(folders: dict[str, tuple[Path, Any]], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from codeassist.model.store import cache_dir

    folder, original = folders["qwen2"]
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache_dir() / "hf" / "models--Tiny--Qwen"  # huggingface_hub's cache layout
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots").mkdir()
    shutil.copytree(folder, repo / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reader, tensors = gguf_tensors(export_model("hf:Tiny/Qwen", "gguf", tmp_path / "q.gguf", gguf_type="f16"))
    assert reader.fields["general.architecture"].contents() == "qwen2"
    w = original.state_dict()["model.layers.0.mlp.up_proj.weight"].numpy()
    assert tensors["blk.0.ffn_up.weight"].dtype == np.float16
    np.testing.assert_allclose(tensors["blk.0.ffn_up.weight"], w, atol=1e-3)


def test_damaged_tokenizer_metadata_is_one_sentence(folders: dict[str, tuple[Path, Any]], tmp_path: Path) -> None:
    folder, _ = folders["qwen2"]
    model, _ = load_pretrained(folder)
    save_model(model, tmp_path / "q.safetensors",
               tokenizer={"tokenizer": "hf", "tokenizer_json": "{not json", "tokenizer_meta": "{}"})
    with pytest.raises(TokenizerExportError, match="tokenizer metadata is damaged") as exc:
        export_model(tmp_path / "q.safetensors", "hf", tmp_path / "out")
    assert "\n" not in str(exc.value) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["qwen2", "llama"])
def test_gguf_computes_transformers_logits_in_llama_cpps_graph(folders: dict[str, tuple[Path, Any]],
                                                                tmp_path: Path, name: str) -> None:
    # llama.cpp's rope for arch llama rotates adjacent pairs, for qwen2 halves: only the right
    # permutation of q and k gives the original logits
    from tests.model.gguf_reference import forward

    folder, original = folders[name]
    ids = ids_of(folder)
    with torch.no_grad():
        want = original(ids).logits[0].numpy()
    got = forward(export_model(folder, "gguf", tmp_path / "m.gguf"), ids[0].tolist())
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_the_ollama_modelfile_follows_the_models_fim_template(folders: dict[str, tuple[Path, Any]],
                                                              tmp_path: Path) -> None:
    from codeassist.model.export import fim_template_of, ollama_modelfile

    folder, _ = folders["qwen2"]
    model, _ = load_pretrained(folder)
    save_model(model, tmp_path / "q.safetensors", tokenizer=HFTokenizer.from_folder(folder).to_metadata())
    for source in (folder, tmp_path / "q.safetensors"):
        template = fim_template_of(source)
        assert template is not None and template.name == "qwen"  # Qwen's markers, prefix first
    text = ollama_modelfile(tmp_path / "q.gguf", fim_template_of(folder))
    assert "<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}<|fim_middle|>" in text
