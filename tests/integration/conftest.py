"""The tiny Hugging Face folders of every open family, built once per test session."""

from __future__ import annotations

import pytest

from tests.families_fixture import FAMILIES, TinyFolder, build_folder


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyFolder]:
    root = tmp_path_factory.mktemp("families")
    return {family: build_folder(root / family, family, seed=i) for i, family in enumerate(FAMILIES)}


@pytest.fixture(params=FAMILIES)
def tiny(request: pytest.FixtureRequest, tiny_folders: dict[str, TinyFolder]) -> TinyFolder:
    """One family's folder: a test that takes it runs once per family."""
    return tiny_folders[request.param]
