from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deterministic tiny model file (2 layers x 64 wide, block 256)."""
    import torch

    from codeassist.model.checkpoint import save_model
    from codeassist.model.config import get_preset
    from codeassist.model.gpt import GPT

    torch.manual_seed(0)
    model = GPT(get_preset("tiny"))
    model.init_weights(0)
    path = tmp_path_factory.mktemp("models") / "tiny.safetensors"
    save_model(model, path, provenance={"purpose": "lsp tests"})
    return path
