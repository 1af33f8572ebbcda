"""Shared fixtures: a tiny random model, saved as a model file, and an isolated data folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from codeassist.model.checkpoint import save_model
from codeassist.model.config import get_preset
from codeassist.model.gpt import GPT


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread() -> None:
    """One intra-op thread: on a shared 2-core machine two threads collapse under load (notes)."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("codeassist-home")
    monkeypatch.setenv("CODEASSIST_HOME", str(home))
    return home


def make_tiny(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(get_preset("tiny"))
    model.init_weights(seed)
    return model.eval()


@pytest.fixture
def tiny_model() -> GPT:
    return make_tiny()


@pytest.fixture
def tiny_model_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.safetensors"
    save_model(make_tiny(), path, provenance={"data": "random", "steps": 0})
    return path
