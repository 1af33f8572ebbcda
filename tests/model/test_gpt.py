"""The model: cache path equals the full forward, and Hugging Face GPT-2 folders load exactly."""

from pathlib import Path

import pytest
import torch

from codeassist.model.checkpoint import ModelFileError
from codeassist.model.gpt import gelu_tanh
from codeassist.model.hf_gpt2 import load_hf_gpt2
from codeassist.model.tokenizer import N_GPT2
from tests.conftest import make_tiny


@pytest.mark.parametrize("rows,chunks", [
    (2, [(0, 25)] + [(t, t + 1) for t in range(25, 40)]),  # a prefill, then decode steps
    (1, [(0, 12), (12, 13), (13, 30)]),  # the causal kernel (T == kv_len), then the masked path
])
def test_cached_forward_matches_full_forward(rows: int, chunks: list[tuple[int, int]]) -> None:
    model = make_tiny()
    idx = torch.randint(0, 50000, (rows, chunks[-1][1]))
    with torch.no_grad():
        full = model(idx)
        model.setup_kv_cache(rows, 64)
        stepped = torch.cat([model(idx[:, a:b], torch.arange(a, b).unsqueeze(0), b) for a, b in chunks], dim=1)
    torch.testing.assert_close(stepped, full, atol=1e-5, rtol=1e-4)


def test_inference_gelu_is_the_tanh_approximation() -> None:
    x = torch.linspace(-12, 12, 1 << 17)
    ref = torch.nn.functional.gelu(x, approximate="tanh")
    with torch.no_grad():  # the fast form; with autograd it is F.gelu itself
        fast = gelu_tanh(x)
    torch.testing.assert_close(fast, ref, atol=2e-6, rtol=0)
    assert not torch.equal(fast, ref)  # the fast form did run: it rounds differently from F.gelu
    assert torch.equal(gelu_tanh(x), ref)  # with autograd on, F.gelu itself


def test_rows_at_different_positions() -> None:
    model = make_tiny()
    a, b = torch.randint(0, 50000, (1, 12)), torch.randint(0, 50000, (1, 7))
    with torch.no_grad():
        ref_a, ref_b = model(a)[0, -1], model(b)[0, -1]
        model.setup_kv_cache(2, 32)
        pad = torch.cat([b[:, :6], torch.zeros(1, 5, dtype=torch.long)], dim=1)
        model(torch.cat([a[:, :11], pad]), torch.arange(11).unsqueeze(0), 11)
        step = model(torch.tensor([[a[0, 11]], [b[0, 6]]]), torch.tensor([[11], [6]]), 12)
    torch.testing.assert_close(step[0, -1], ref_a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(step[1, -1], ref_b, atol=1e-5, rtol=1e-4)


def _write_hf_dir(path: Path, safetensors: bool) -> torch.nn.Module:
    import transformers  # a test dependency: missing, this must fail, not skip
    cfg = transformers.GPT2Config(vocab_size=N_GPT2, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    torch.manual_seed(0)
    ref = transformers.GPT2LMHeadModel(cfg).eval()
    if safetensors:
        ref.save_pretrained(path)
    else:  # the older layout: a torch.save'd state dict, read back with weights_only
        ref.config.save_pretrained(path)
        torch.save(ref.state_dict(), path / "pytorch_model.bin")
    return ref


@pytest.mark.parametrize("safetensors", [True, False])
def test_hugging_face_folder_loads_with_the_same_logits(tmp_path: Path, safetensors: bool) -> None:
    ref = _write_hf_dir(tmp_path, safetensors)
    assert (tmp_path / ("model.safetensors" if safetensors else "pytorch_model.bin")).exists()
    ours = load_hf_gpt2(tmp_path)
    idx = torch.randint(0, N_GPT2, (2, 20))
    with torch.no_grad():
        expected = ref(idx).logits
        got = ours(idx)[..., :N_GPT2]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_a_folder_without_weights_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"n_positions": 64, "n_layer": 1, "n_head": 1, "n_embd": 8}')
    with pytest.raises(ModelFileError, match="neither"):
        load_hf_gpt2(tmp_path)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_a_pickle_exploit_in_pytorch_model_bin_is_refused_without_side_effect(tmp_path: Path) -> None:
    import pickle

    (tmp_path / "config.json").write_text('{"n_positions": 64, "n_layer": 1, "n_head": 1, "n_embd": 8}')
    marker = tmp_path / "pwned"
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Exploit(marker)}))
    with pytest.raises(ModelFileError, match="not a plain weights file"):
        load_hf_gpt2(tmp_path)
    assert not marker.exists()
