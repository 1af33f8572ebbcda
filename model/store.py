"""Where models live, by name: `default` (inside the package), `gpt2` (downloaded once into the
cache), `hf:ORG/NAME[@REVISION]` (an open model from the Hugging Face Hub, downloaded once into
the cache: model/hub.py), a user's saved names (the user data folder), or any path."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

import platformdirs

from codeassist.model.checkpoint import ModelFileError

DEFAULT_MODEL_FILE = "default.safetensors"
HF_NAMES = ("gpt2",)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def data_dir() -> Path:
    """The user data folder (override with CODEASSIST_HOME, as tests do)."""
    return Path(os.environ.get("CODEASSIST_HOME") or platformdirs.user_data_dir("codeassist"))


def cache_dir() -> Path:
    home = os.environ.get("CODEASSIST_HOME")
    return Path(home) / "cache" if home else Path(platformdirs.user_cache_dir("codeassist"))


def models_dir() -> Path:
    return data_dir() / "models"


def default_model_path() -> Path:
    return Path(str(resources.files("codeassist.model").joinpath("assets", DEFAULT_MODEL_FILE)))


def is_valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def named_model_path(name: str) -> Path:
    if not is_valid_name(name):
        raise ValueError(f"invalid model name {name!r}: use letters, digits, '.', '_' or '-'")
    return models_dir() / f"{name}.safetensors"


def resolve_model(model: str | os.PathLike[str]) -> tuple[Path, str]:
    """(path, display name). A path may be a model file or a Hugging Face folder; `hf:` names
    resolve to the snapshot folder in the cache."""
    text = os.fspath(model)
    if text == "default":
        return default_model_path(), "default"
    if text.startswith("hf:"):
        from codeassist.model.hub import resolve_hub_model

        return resolve_hub_model(text), text.removeprefix("hf:")
    if text in HF_NAMES:
        from codeassist.model.hf_gpt2 import ensure_downloaded

        return ensure_downloaded(text), text
    path = Path(text).expanduser()
    if path.exists() or os.sep in text or text.endswith(".safetensors"):
        return path, path.stem if path.is_file() else path.name
    if is_valid_name(text):
        named = named_model_path(text)
        if named.exists():
            return named, text
    raise ModelFileError(f"no model named {text!r} (not a file, not 'default', 'gpt2' or hf:ORG/NAME, "
                         f"and not in {models_dir()})")


def list_models() -> list[str]:
    """The names --model takes without a path: built in, the user's, and the hf: models in the cache."""
    from codeassist.model.hub import cached_hub_models

    names = ["default", *HF_NAMES]
    if models_dir().is_dir():
        names += sorted(p.stem for p in models_dir().glob("*.safetensors"))
    return names + cached_hub_models()
