"""Every package pyproject installs reaches the image: each Dockerfile copies its folder and each
build context's .dockerignore lets it through. A package added to pyproject but not here breaks
`pip install .` inside the image only, minutes into `make image-test`; this catches it in a second."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]


def package_folders() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = set(config["tool"]["setuptools"]["package-dir"].values())
    assert {"model", "lsp", "evaluation"} <= folders
    return folders


@pytest.mark.parametrize("name", DOCKERFILES)
def test_each_dockerfile_copies_every_package_folder(name: str) -> None:
    text = (ROOT / "deploy" / name).read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", text, re.M))
    assert package_folders() - copied == set(), f"deploy/{name} does not copy these package folders"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_each_build_context_lets_every_package_folder_through(name: str) -> None:
    lines = (ROOT / "deploy" / f"{name}.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert package_folders() - allowed == set(), f"deploy/{name}.dockerignore leaves these out"
