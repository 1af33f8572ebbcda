"""int8 and int4 for every family: quantize a tiny model transformers built, save, load, compare."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codeassist.model.causal_lm import CausalLM
from codeassist.model.checkpoint import load_model, read_info
from codeassist.model.families import load_pretrained
from codeassist.model.quantized import (
    Int4Linear,
    Int8Linear,
    TiedHead,
    block_linear_names,
    dequantize_model,
    is_quantized,
)
from codeassist.quantization.quantize import quantize
from tests.model.family_models import VOCAB, save_hf

NAMES = ["llama", "qwen2", "starcoder2", "bigcode"]


@pytest.fixture(scope="module")
def floats(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CausalLM]:
    out = {}
    for i, name in enumerate(NAMES):
        folder = tmp_path_factory.mktemp(name)
        save_hf(name, folder, seed=10 + i)
        out[name] = load_pretrained(folder)[0]
    return out


def _greedy(model: CausalLM, prompt: list[int], n: int) -> list[int]:
    T = len(prompt)
    model.setup_kv_cache(1, T + n)
    logits = model(torch.tensor([prompt]), torch.arange(T).unsqueeze(0), T, last_only=True)
    out = []
    for i in range(n):
        out.append(int(logits[0, -1].argmax()))
        logits = model(torch.tensor([[out[-1]]]), torch.tensor([[T + i]]), T + i + 1)
    model.drop_kv_cache()
    return out


PROMPT = [5, 17, 42, 101, 7, 250, 33, 64]


@pytest.mark.parametrize("method", ["int8", "int4"])
@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_quantized_family_model_survives_save_and_load(name: str, method: str, tmp_path: Path,
                                                         floats: dict[str, CausalLM]) -> None:
    model = floats[name]
    q = quantize(model, method, group_size=32)
    built = q.build(model)
    path = tmp_path / f"{name}-{method}.safetensors"
    q.save(model, path, provenance={"quantized_from": name})
    info = read_info(path)
    assert info.family == model.config.family and info.scheme == method
    loaded, _ = load_model(path)
    assert is_quantized(loaded) and type(loaded) is type(model)
    kind = Int8Linear if method == "int8" else Int4Linear
    linears = [n for n, m in loaded.named_modules() if type(m) is kind and n.startswith(model.LAYERS)]
    assert len(linears) == model.config.n_layer * len(model.BLOCK_LINEARS)
    if model.tied_embeddings:
        assert isinstance(loaded.lm_head, TiedHead)
    else:  # the untied head is quantized on its own, with the head's scheme (int8 by default)
        assert type(loaded.lm_head) is Int8Linear
        assert loaded.lm_head.qweight.data_ptr() != loaded.get_submodule(loaded.EMBEDDING).qweight.data_ptr()
    assert _greedy(loaded, PROMPT, 16) == _greedy(built, PROMPT, 16)
    x = torch.tensor([PROMPT])
    torch.testing.assert_close(loaded(x), built(x), atol=0, rtol=0)


@pytest.mark.parametrize("head", ["none", "int4"])
@torch.no_grad()
def test_untied_head_schemes_survive_save_and_load(head: str, tmp_path: Path, floats: dict[str, CausalLM]) -> None:
    model = floats["llama"]  # untied
    q = quantize(model, "int8", group_size=32, head=head)
    path = tmp_path / "m.safetensors"
    q.save(model, path)
    loaded, info = load_model(path)
    assert info.quantization["head"] == head
    embedding = loaded.get_submodule(loaded.EMBEDDING)
    if head == "none":
        assert type(loaded.lm_head) is torch.nn.Linear and type(embedding) is torch.nn.Embedding
        assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    else:
        assert type(loaded.lm_head) is Int4Linear
    assert _greedy(loaded, PROMPT, 12) == _greedy(q.build(model), PROMPT, 12)


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_int8_logits_are_close_to_float(name: str, floats: dict[str, CausalLM]) -> None:
    model = floats[name]
    loaded = quantize(model, "int8").build(model)
    x = torch.randint(0, VOCAB, (1, 24), generator=torch.Generator().manual_seed(3))
    ref, got = model(x), loaded(x)
    # weights to 8 bits and, in the CPU kernel, activations to 7 bits: ~5% on a 64-wide random model
    err = (got - ref).norm() / ref.norm()
    assert err < 0.1, float(err)
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.85


@pytest.mark.parametrize("name", NAMES)
@torch.no_grad()
def test_dequantize_gives_a_float_model_of_the_family(name: str, floats: dict[str, CausalLM]) -> None:
    model = floats[name]
    loaded = quantize(model, "int8").build(model)
    back = dequantize_model(loaded)
    assert type(back) is type(model) and not is_quantized(back)
    for name_ in [*block_linear_names(model.config), model.EMBEDDING, "lm_head"]:
        q = loaded.get_submodule(name_)
        if isinstance(q, Int8Linear):
            assert torch.equal(back.get_submodule(name_).weight, q.dequantize())
    assert back.tied_embeddings == model.tied_embeddings
    if back.tied_embeddings:
        assert back.lm_head.weight is back.get_submodule(back.EMBEDDING).weight


def test_gptq_refuses_other_families_in_one_sentence(floats: dict[str, CausalLM]) -> None:
    with pytest.raises(ValueError) as exc:
        quantize(floats["qwen2"], "gptq", calibration=torch.zeros(1, 8, dtype=torch.long))
    assert "GPT-2" in str(exc.value) and "\n" not in str(exc.value)




def test_quantize_cli_on_a_hugging_face_folder_carries_its_tokenizer(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from codeassist.cli.main import main
    from codeassist.model.completion import complete
    from codeassist.model.engine import Engine
    from codeassist.model.hf_tokenizer import HFTokenizer
    from tests.model.test_tokenization import build_folder, save_tiny_qwen2

    folder = build_folder(tmp_path / "tiny-qwen", "qwen")
    tok = HFTokenizer.from_folder(folder)
    save_tiny_qwen2(folder, vocab=(tok.n_vocab + 63) // 64 * 64, positions=256)
    out = tmp_path / "qwen-int8.safetensors"
    assert main(["quantize", str(folder), "--method", "int8", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    info = read_info(out)
    assert (info.family, info.scheme, info.tokenizer) == ("qwen2", "int8", "hf")
    loaded = Engine.load(out, device="cpu")
    assert loaded.tokenizer.to_metadata() == tok.to_metadata()
    float_model, _ = load_pretrained(folder)
    built = Engine(quantize(float_model, "int8").build(float_model), torch.device("cpu"), torch.float32,
                   tokenizer=tok)
    prefix, suffix = "def main():\n    x = ", "\n    return x\n"
    assert complete(loaded, prefix, suffix, max_new_tokens=12)[0] == complete(built, prefix, suffix,
                                                                              max_new_tokens=12)[0]


def test_quantize_cli_refuses_gptq_for_other_families_in_one_sentence(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from codeassist.cli.main import main
    from tests.model.test_tokenization import build_folder

    folder = build_folder(tmp_path / "sc", "starcoder", vocab=290)
    save_hf("bigcode", folder)
    out = tmp_path / "x.safetensors"
    assert main(["quantize", str(folder), "--method", "gptq", "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "GPT-2" in err and "--method int4" in err
    assert not out.exists()
