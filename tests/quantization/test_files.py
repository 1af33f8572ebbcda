"""Quantized model files: save → load → same model; bad metadata → one clear error; engine output stable."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from codeassist.model.checkpoint import ModelFileError, load_model, model_metadata, save_tensors_atomic
from codeassist.model.engine import Engine, GenerationRequest, GenerationResult, StopRules
from codeassist.model.gpt import GPT
from codeassist.model.quantized import Int4Linear, Int8Linear, dequantize_model, is_quantized
from codeassist.quantization.quantize import Quantized, quantize
from tests.conftest import make_tiny

# (method, group size, head): every scheme, and every way of storing the tied head
SCHEMES = [("int8", 64, "int8"), ("int8", 64, "none"), ("int4", 32, "int8"), ("int4", 64, "int4"),
           ("gptq", 32, "int8"), ("gptq", 64, "int4")]


@functools.cache
def _quantized(method: str, group_size: int, head: str) -> tuple[GPT, Quantized]:
    """The tiny model and its quantized tensors (cached: several tests read the same ones)."""
    model = make_tiny()
    calib = torch.randint(0, 50000, (4, 48), generator=torch.Generator().manual_seed(0))
    return model, quantize(model, method, group_size, head, calibration=calib if method == "gptq" else None)


def _run(engine: Engine, prompt: tuple[int, ...]) -> GenerationResult:
    return engine.generate(GenerationRequest(prompt=prompt, stop=StopRules(max_new_tokens=12, stop_on_eos=False)))


def _greedy(engine: Engine, prompt: tuple[int, ...]) -> list[int]:
    return _run(engine, prompt).tokens


@pytest.mark.parametrize(("method", "group_size", "head"), SCHEMES)
def test_save_load_matches_the_dequantized_reference(tmp_path: Path, method: str, group_size: int,
                                                     head: str) -> None:
    model, qz = _quantized(method, group_size, head)
    path = tmp_path / "q.safetensors"
    qz.save(model, path, provenance={"data": "random"})
    loaded, info = load_model(path)
    assert info.scheme == ("int8" if method == "int8" else "int4")
    assert info.quantization["method"] == ("gptq" if method == "gptq" else "rtn")
    layer_type = Int8Linear if method == "int8" else Int4Linear
    assert isinstance(loaded.transformer.h[0].mlp.c_fc, layer_type)
    idx = torch.randint(0, 50000, (2, 30))
    with torch.no_grad():
        out = loaded(idx)
        torch.testing.assert_close(out, qz.build(model)(idx))  # the file holds exactly what was built
        ref = dequantize_model(loaded)(idx)
        assert float((out - ref).abs().max()) < 0.05 * float(ref.abs().max())
        # and the quantized model is still close to the float one it came from
        assert float((out - model(idx)).abs().max()) < 0.25 * float(ref.abs().max())


@pytest.mark.parametrize(("method", "group_size", "head"), SCHEMES)
def test_engine_greedy_output_is_stable_across_save_and_load(tmp_path: Path, method: str, group_size: int,
                                                             head: str) -> None:
    model, qz = _quantized(method, group_size, head)
    path = tmp_path / "q.safetensors"
    qz.save(model, path)
    prompt = tuple(range(1000, 1020))
    before = _greedy(Engine(qz.build(model), torch.device("cpu")), prompt)
    engine = Engine.load(str(path), device="cpu")
    after = _run(engine, prompt)
    assert before == after.tokens and len(after.tokens) == 12 and after.reused_tokens == 0
    # the KV cache path (prefix reuse) gives what a fresh prefill gives
    again = _run(engine, prompt)
    assert again.reused_tokens == len(prompt) - 1  # all but the last prompt token, refed for its logits
    assert again.tokens == after.tokens


def test_quantized_file_is_smaller(tmp_path: Path) -> None:
    sizes = {}
    for method, group_size in (("int8", 64), ("int4", 64)):
        model, qz = _quantized(method, group_size, method)
        path = tmp_path / f"{method}.safetensors"
        qz.save(model, path)
        sizes[method] = path.stat().st_size
    fp32 = sum(p.numel() * 4 for p in model.parameters())
    assert sizes["int8"] < 0.3 * fp32
    assert sizes["int4"] < 0.6 * sizes["int8"]


def _rewrite(src: Path, dst: Path, quant: object | None = None,
             change: dict[str, torch.Tensor] | None = None, drop: str | None = None) -> Path:
    loaded_meta: dict[str, str]
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        loaded_meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    tensors.update(change or {})
    if drop:
        tensors.pop(drop)
    if quant is not None:
        loaded_meta["quantization"] = quant if isinstance(quant, str) else json.dumps(quant)
    save_tensors_atomic(dst, tensors, loaded_meta)
    return dst


@pytest.fixture
def int8_file(tmp_path: Path) -> Path:
    model, qz = _quantized("int8", 64, "int8")
    path = tmp_path / "int8.safetensors"
    qz.save(model, path)
    return path


@pytest.mark.parametrize(("quant", "expect"), [
    ({"scheme": "int3"}, "does not know"),
    ({"scheme": "int4", "group_size": 48, "head": "int8"}, "group_size"),
    ({"scheme": "int4", "group_size": "64", "head": "int8"}, "group_size"),
    ({"scheme": "int8", "head": "fp8"}, "head"),
    ({"scheme": "int4", "group_size": 64, "head": "int8"}, "does not match"),  # int8 tensors, int4 label
    ("[1, 2]", "damaged metadata"),
    ("{not json", "damaged metadata"),
])
def test_bad_quantization_metadata_is_one_clear_error(int8_file: Path, tmp_path: Path, quant: object,
                                                      expect: str) -> None:
    bad = _rewrite(int8_file, tmp_path / "bad.safetensors", quant=quant)
    with pytest.raises(ModelFileError, match=expect) as err:
        load_model(bad)
    assert "\n" not in str(err.value)


def test_wrong_tensor_dtype_or_missing_tensor_is_one_clear_error(int8_file: Path, tmp_path: Path) -> None:
    name = "transformer.h.0.mlp.c_fc.qweight"
    as_float = load_file(str(int8_file))[name].float()
    bad = _rewrite(int8_file, tmp_path / "bad1.safetensors", change={name: as_float})
    with pytest.raises(ModelFileError, match="does not match its quantization"):
        load_model(bad)
    bad = _rewrite(int8_file, tmp_path / "bad2.safetensors", drop=name)
    with pytest.raises(ModelFileError, match="does not match its quantization"):
        load_model(bad)


def test_dequantized_model_fine_tunes(int8_file: Path) -> None:
    loaded, _ = load_model(int8_file)
    assert is_quantized(loaded)
    model = dequantize_model(loaded)
    assert not is_quantized(model)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied again
    idx = torch.randint(0, 50000, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), dequantize_model(loaded)(idx))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model.loss(idx[:, :-1], idx[:, 1:])
    loss.backward()
    opt.step()
    with torch.no_grad():
        assert float(model.loss(idx[:, :-1], idx[:, 1:])) < float(loss.detach())


def test_metadata_records_the_scheme(int8_file: Path) -> None:
    from codeassist.model.checkpoint import read_info

    info = read_info(int8_file)
    assert info.quantization == {"scheme": "int8", "head": "int8", "method": "rtn"}
    assert model_metadata(info.config)["quantization"] == '{"scheme": "none"}'
