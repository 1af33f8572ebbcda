"""`codeassist export`: the real default model end to end, and every refusal as one sentence, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codeassist.cli.main import main
from codeassist.model import tokenizer as ours


def test_exports_the_default_model_for_transformers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from codeassist.model.checkpoint import load_model
    from codeassist.model.quantized import dequantize_model
    from codeassist.model.store import default_model_path

    out = tmp_path / "default-hf"
    assert main(["export", "default", "--format", "hf", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    model, info = load_model(default_model_path())
    assert info.scheme == "int8"  # the shipped file: the export dequantized it
    ref = dequantize_model(model).eval()
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    text = "def fibonacci(n):\n    if n < 2:\n        return n\n    return "
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids == ours.encode(text)
    with torch.no_grad():
        want = ref(torch.tensor([ids]))
        got = hf(torch.tensor([ids])).logits
    assert torch.allclose(got, want, atol=1e-4, rtol=0)
    assert got[0, -1].argmax() == want[0, -1].argmax()


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("codeassist: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_an_unknown_format_exits_2(tiny_model_file: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(tiny_model_file), "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
    assert "unknown export format 'onnx'; choose one of: hf, gguf" in one_error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_an_existing_out_exits_2_untouched(tiny_model_file: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.gguf"
    out.write_bytes(b"mine")
    assert main(["export", str(tiny_model_file), "--format", "gguf", "--out", str(out)]) == 2
    assert "already exists; pass --force to replace it" in one_error_line(capsys)
    assert out.read_bytes() == b"mine"


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"\x80\x04pickle"])
def test_a_model_that_cannot_be_read_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             content: bytes) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    assert main(["export", str(bad), "--format", "hf", "--out", str(tmp_path / "o")]) == 2
    assert str(bad) in one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors"]  # nothing half-written


def test_an_unknown_model_name_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "no-such-model", "--format", "gguf", "--out", str(tmp_path / "o.gguf")]) == 2
    assert "no-such-model" in one_error_line(capsys)


def test_gguf_prints_an_ollama_modelfile_with_our_fim_layout(tiny_model_file: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny.gguf"
    assert main(["export", str(tiny_model_file), "--format", "gguf", "--gguf-type", "q8_0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"FROM {out.resolve()}\n" in printed
    # Ollama takes /api/generate's suffix only when the template uses .Suffix; ours puts the suffix first
    assert ('TEMPLATE """{{- if .Suffix }}<|fim_suffix|>{{ .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_middle|>'
            '{{- else }}{{ .Prompt }}{{- end }}"""') in printed
    assert 'PARAMETER stop "<|endoftext|>"' in printed
