"""train_default: a session that stops before a deadline resumes exactly, a lost state restarts
from the shipped (int8) weights, and every saved model carries tokens_seen_total."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from codeassist.model.checkpoint import load_model, read_info
from codeassist.model.config import get_preset
from codeassist.model.quantized import dequantize_model
from codeassist.model.store import default_model_path
from codeassist.quantization.quantize import quantize
from codeassist.training import train_default
from codeassist.training.loop import build_model
from codeassist.training.shards import write_manifest

BEFORE = 123_456  # tokens the shipped model has seen
TOKENS_PER_STEP = 2 * 32


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 5000), ("val", 1000)):
        (folder / f"{split}.bin").write_bytes(rng.integers(0, 500, n, dtype=np.uint16).tobytes())
    write_manifest(folder, {}, {"source": "test tokens", "corpus_id": "c0ffee"})
    return folder


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """An int8 model file like the embedded default, recording how many tokens it has seen."""
    model = build_model(get_preset("tiny"), seed=3)
    path = tmp_path / "shipped-int8.safetensors"
    quantize(model, "int8").save(model, path, provenance={"tokens_seen_total": BEFORE})
    return path


def _train(data: Path, out: Path, shipped: Path, *extra: str) -> int:
    return train_default.main([str(data), str(out), "--preset", "tiny", "--resume", "--init-from", str(shipped),
                               "--time-budget", "0", "--max-iters", "4", "--batch-size", "2", "--seq-len", "32",
                               "--warmup", "2", "--lr", "1e-3", "--ckpt-interval", "1", "--threads", "1", *extra])


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path)[0].state_dict()


def test_a_session_stopped_at_its_deadline_resumes_exactly(tmp_path: Path, data: Path, shipped: Path) -> None:
    assert _train(data, tmp_path / "whole", shipped) == 0
    # a deadline already past: the session ends right after its first checkpoint past step 1
    assert _train(data, tmp_path / "parts", shipped, "--stop-at", "2000-01-01T00:00Z") == 0
    assert read_info(tmp_path / "parts" / "model.safetensors").provenance["steps"] == 1
    # the resumed state keeps its own count even if the --init-from file now says another
    assert _train(data, tmp_path / "parts", shipped, "--tokens-seen-before", "0") == 0
    whole, parts = _weights(tmp_path / "whole" / "model.safetensors"), _weights(tmp_path / "parts" / "model.safetensors")
    for k in whole:
        assert torch.equal(whole[k], parts[k]), k
    prov = read_info(tmp_path / "parts" / "model.safetensors").provenance
    assert prov["tokens_seen_total"] == BEFORE + 4 * TOKENS_PER_STEP
    assert prov["corpus_id"] == "c0ffee"


def test_a_lost_state_restarts_from_the_shipped_int8_weights(tmp_path: Path, data: Path, shipped: Path) -> None:
    out = tmp_path / "run"
    assert _train(data, out, shipped, "--max-iters", "1") == 0  # no state in `out`: starts from `shipped`
    start = load_model(shipped)[0]
    start_w = dequantize_model(start).state_dict()["transformer.h.0.attn.c_attn.weight"]
    trained = _weights(out / "model.safetensors")["transformer.h.0.attn.c_attn.weight"]
    # one small step away from the shipped weights, not from a fresh initialisation
    assert 0 < (trained - start_w).abs().max().item() < 0.01
    assert read_info(out / "model.safetensors").provenance["tokens_seen_total"] == BEFORE + TOKENS_PER_STEP


def test_a_file_that_does_not_say_its_tokens_is_refused(tmp_path: Path, data: Path) -> None:
    model = build_model(get_preset("tiny"), seed=3)
    path = tmp_path / "anon-int8.safetensors"
    quantize(model, "int8").save(model, path, provenance={})
    with pytest.raises(SystemExit):
        _train(data, tmp_path / "run", path)


def test_the_shipped_v2_counts_all_three_runs() -> None:
    prov = read_info(default_model_path()).provenance
    assert train_default.tokens_seen_before(prov) == 15_245_312
