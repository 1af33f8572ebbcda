"""`export_model`: HF folders that transformers loads with our logits, GGUF files that read back whole."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from codeassist.model import tokenizer as ours
from codeassist.model import tokenizer_export as tx
from codeassist.model.checkpoint import save_model
from codeassist.model.config import ModelConfig
from codeassist.model.export import ExportError, export_model
from codeassist.model.gpt import GPT

SAMPLE = "import os\n\ndef main(argv):\n        return  os.path.join(argv[0], '日本')  # done\n"


@pytest.fixture(scope="module")
def tiny_ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, gguf.GGUFReader]:
    """The tiny model (conftest's make_tiny) exported once per GGUF type, read back once: reading
    50k tokens and merges is most of a GGUF test's time."""
    from tests.conftest import make_tiny

    folder = tmp_path_factory.mktemp("gguf")
    save_model(make_tiny(), folder / "tiny.safetensors")
    return {t: gguf.GGUFReader(str(export_model(folder / "tiny.safetensors", "gguf", folder / f"{t}.gguf",
                                                 gguf_type=t)))
            for t in ("f32", "f16", "q8_0")}


def sample_ids() -> torch.Tensor:
    return torch.tensor([ours.encode(SAMPLE)])


def field(reader: gguf.GGUFReader, key: str) -> object:
    return reader.fields[key].contents()


def test_hf_folder_loads_in_transformers_with_our_logits(tiny_model: GPT, tiny_model_file: Path,
                                                         tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export_model(tiny_model_file, "hf", tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json",
        "tokenizer.json", "tokenizer_config.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["vocab_size"] == 50304
    assert config["activation_function"] == "gelu_new" and config["tie_word_embeddings"] is True
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = sample_ids()
    with torch.no_grad():
        want, got = tiny_model(ids), hf(ids).logits
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4, rtol=0)

    tok = AutoTokenizer.from_pretrained(out)
    stdlib = (Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py").read_text("utf-8")
    for text in (SAMPLE, stdlib):
        assert tok(text, add_special_tokens=False)["input_ids"] == ours.encode(text)
    assert tok.decode(ours.encode(SAMPLE)) == SAMPLE
    assert tok.eos_token_id == ours.EOT_ID
    assert tok.convert_tokens_to_ids(ours.FIM_MIDDLE) == ours.FIM_MIDDLE_ID


def test_a_model_without_biases_exports_with_zero_biases(tmp_path: Path) -> None:
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT(ModelConfig(block_size=64, n_layer=1, n_head=2, n_embd=32, bias=False))
    model.init_weights(0)
    model.eval()
    save_model(model, tmp_path / "nobias.safetensors")
    out = export_model(tmp_path / "nobias.safetensors", "hf", tmp_path / "hf")
    hf = GPT2LMHeadModel.from_pretrained(out).eval()
    with torch.no_grad():
        assert torch.allclose(hf(sample_ids()).logits, model(sample_ids()), atol=1e-4, rtol=0)


def test_gguf_reads_back_with_our_tensors_and_vocabulary(tiny_model: GPT,
                                                         tiny_ggufs: dict[str, gguf.GGUFReader]) -> None:
    reader = tiny_ggufs["f32"]
    c = tiny_model.config
    assert field(reader, "general.architecture") == "gpt2"
    assert field(reader, "general.file_type") == gguf.LlamaFileType.ALL_F32
    assert field(reader, "gpt2.context_length") == c.block_size
    assert field(reader, "gpt2.embedding_length") == c.n_embd
    assert field(reader, "gpt2.feed_forward_length") == 4 * c.n_embd
    assert field(reader, "gpt2.block_count") == c.n_layer
    assert field(reader, "gpt2.attention.head_count") == c.n_head
    assert field(reader, "gpt2.attention.layer_norm_epsilon") == pytest.approx(c.layer_norm_eps)
    assert field(reader, "tokenizer.ggml.model") == "gpt2"
    assert field(reader, "tokenizer.ggml.pre") == "gpt-2"
    assert field(reader, "tokenizer.ggml.eos_token_id") == ours.EOT_ID
    assert field(reader, "tokenizer.ggml.fim_mid_token_id") == ours.FIM_MIDDLE_ID

    tokens = field(reader, "tokenizer.ggml.tokens")
    assert isinstance(tokens, list) and len(tokens) == c.vocab_size
    assert tokens[: ours.FIM_SUFFIX_ID + 1] == tx.tokens()
    assert tokens[ours.N_GPT2] == tx.byte_level(b"  ")  # our first space run
    merges = field(reader, "tokenizer.ggml.merges")
    assert isinstance(merges, list) and len(merges) == len(tx.merges())
    assert merges[0] == "Ġ t"  # GPT-2's first merge

    tensors = {t.name: t for t in reader.tensors}
    expected = {"token_embd.weight", "position_embd.weight", "output_norm.weight", "output_norm.bias",
                "output.weight"}
    for n in range(c.n_layer):
        for part in ("attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"):
            expected |= {f"blk.{n}.{part}.weight", f"blk.{n}.{part}.bias"}
    assert set(tensors) == expected
    sd = tiny_model.state_dict()
    pairs = {"token_embd.weight": "transformer.wte.weight", "output.weight": "lm_head.weight",
             "position_embd.weight": "transformer.wpe.weight", "blk.1.attn_qkv.weight": "transformer.h.1.attn.c_attn.weight",
             "blk.1.attn_qkv.bias": "transformer.h.1.attn.c_attn.bias",
             "blk.0.ffn_down.weight": "transformer.h.0.mlp.c_proj.weight",
             "blk.0.ffn_norm.weight": "transformer.h.0.ln_2.weight", "output_norm.bias": "transformer.ln_f.bias"}
    for name, ours_name in pairs.items():
        t = tensors[name]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        want = sd[ours_name].numpy()
        assert list(t.shape) == list(reversed(want.shape))  # GGUF lists dimensions innermost first
        np.testing.assert_array_equal(np.asarray(t.data).reshape(want.shape), want)


@pytest.mark.parametrize(("gguf_type", "qtype", "atol"), [
    ("f16", gguf.GGMLQuantizationType.F16, 1e-3), ("q8_0", gguf.GGMLQuantizationType.Q8_0, 2e-3)])
def test_gguf_f16_and_q8_0_keep_norms_in_f32(tiny_model: GPT, tiny_ggufs: dict[str, gguf.GGUFReader],
                                            gguf_type: str, qtype: gguf.GGMLQuantizationType,
                                            atol: float) -> None:
    reader = tiny_ggufs[gguf_type]
    assert reader.fields["general.file_type"].contents() == int(
        gguf.LlamaFileType.MOSTLY_F16 if gguf_type == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    tensors = {t.name: t for t in reader.tensors}
    assert tensors["blk.0.attn_qkv.weight"].tensor_type == qtype
    assert tensors["token_embd.weight"].tensor_type == qtype
    for f32 in ("blk.0.attn_norm.weight", "blk.0.attn_qkv.bias", "position_embd.weight"):
        assert tensors[f32].tensor_type == gguf.GGMLQuantizationType.F32
    t = tensors["blk.1.ffn_up.weight"]
    want = tiny_model.state_dict()["transformer.h.1.mlp.c_fc.weight"].numpy()
    got = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(want.shape)
    assert np.abs(got - want).max() < atol


def test_an_existing_destination_is_refused_then_replaced_with_force(tiny_model_file: Path,
                                                                    tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "mine.txt").write_text("keep")
    with pytest.raises(ExportError, match="already exists; pass --force"):
        export_model(tiny_model_file, "hf", dest)
    assert (dest / "mine.txt").read_text() == "keep"
    export_model(tiny_model_file, "hf", dest, force=True)
    assert (dest / "config.json").exists() and not (dest / "mine.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tiny.safetensors"]  # no leftovers


def test_a_failed_export_leaves_nothing_behind(tiny_model_file: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from codeassist.model import export_gguf

    def fail_midway(writer: gguf.GGUFWriter, name: str, array: np.ndarray, gguf_type: str) -> None:
        if name.startswith("blk.1"):
            raise OSError("disk full")
        writer.add_tensor(name, array)

    monkeypatch.setattr(export_gguf, "add_tensor", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        export_model(tiny_model_file, "gguf", tmp_path / "new" / "folders" / "x.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]  # the folders it made too


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fmt": "onnx"}, "unknown export format 'onnx'"),
    ({"fmt": "gguf", "gguf_type": "q4_k"}, "unknown GGUF type 'q4_k'"),
    ({"fmt": "hf", "gguf_type": "f16"}, "--gguf-type applies only to --format gguf"),
])
def test_wrong_options_are_one_sentence(tiny_model_file: Path, tmp_path: Path, kwargs: dict[str, str],
                                        message: str) -> None:
    with pytest.raises(ExportError, match=message) as exc:
        export_model(tiny_model_file, out=tmp_path / "o", **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "o").exists()


def test_gguf_computes_our_logits_in_llama_cpps_gpt2_graph(tiny_model: GPT,
                                                           tiny_ggufs: dict[str, gguf.GGUFReader]) -> None:
    from tests.model.gguf_reference import forward

    ids = ours.encode(SAMPLE)
    with torch.no_grad():
        want = tiny_model(torch.tensor([ids]))[0].numpy()
    np.testing.assert_allclose(forward(tiny_ggufs["f32"], ids), want, atol=1e-4, rtol=0)
    q8 = forward(tiny_ggufs["q8_0"], ids)
    assert np.abs(q8 - want).max() < 0.05  # 8-bit blocks: close, not equal
    assert (q8.argmax(-1) == want.argmax(-1)).mean() > 0.9
