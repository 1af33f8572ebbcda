"""Open code models from a local Hugging Face folder: config.json, then safetensors (one file or shards).

The family is chosen from config.json's `model_type`, never from a file or folder name. Module
names are Hugging Face's (see model/llama.py, model/bigcode.py), so the name map only drops
buffers that older checkpoints carry (rotary inv_freq, causal-mask biases) and fills a tied
head; any other tensor that is missing or extra is refused with one sentence. `gpt2` folders
go through model/hf_gpt2.py, which extends their vocabulary to ours.

Entry points: `is_hf_folder(path)`, `family_of(path)`, `load_pretrained(path, device, dtype)`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from codeassist.model.architectures import FAMILIES, FamilyConfig, empty_model, family_name
from codeassist.model.bigcode import BigCodeConfig
from codeassist.model.causal_lm import CausalLM
from codeassist.model.checkpoint import ModelFileError, check_safetensors, load_tensors
from codeassist.model.llama import LlamaConfig

SUPPORTED = tuple(FAMILIES)  # Hugging Face model types: gpt2, llama, qwen2, gpt_bigcode, starcoder2
INDEX = "model.safetensors.index.json"
# buffers some checkpoints store that are computed here, not loaded
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias")


def is_hf_folder(path: str | os.PathLike[str]) -> bool:
    """A folder with a config.json (what `--model DIR` points at)."""
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file()


def read_hf_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path) / "config.json"
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"{path} has no config.json, so it is not a Hugging Face model folder") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"{p} cannot be read as JSON ({str(exc)[:120]})") from None
    if not isinstance(raw, dict):
        raise ModelFileError(f"{p} is not a JSON object")
    return raw


def family_of(path: str | os.PathLike[str]) -> str:
    """The family of a Hugging Face folder: its config.json's model_type, if codeassist supports it."""
    model_type = read_hf_config(path).get("model_type")
    if model_type not in FAMILIES:
        raise ModelFileError(f"{path} holds a model of type {model_type!r}; codeassist supports the "
                             f"model types {', '.join(SUPPORTED)}")
    return str(model_type)


def hf_family_config(path: str | os.PathLike[str]) -> FamilyConfig:
    """Our config for a Hugging Face folder (gpt2 folders: model/hf_gpt2.py's)."""
    family = family_of(path)
    if family == "gpt2":
        from codeassist.model.hf_gpt2 import config_from_hf

        return config_from_hf(Path(path))
    raw = read_hf_config(path)
    try:
        if family == "gpt_bigcode":
            return BigCodeConfig.from_hf(raw)
        return LlamaConfig.from_hf(raw)
    except (KeyError, ValueError, TypeError) as exc:
        what = f"lacks {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ModelFileError(f"{path} cannot be loaded: its {family} config.json {what}") from None


def read_hf_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Every tensor of model.safetensors, or of the shards a model.safetensors.index.json lists."""
    folder = Path(path)
    single, index = folder / "model.safetensors", folder / INDEX
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted({str(v) for v in weight_map.values()})
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            raise ModelFileError(f"{index} is damaged (no readable weight_map)") from None
        if any(Path(s).name != s for s in shards):
            raise ModelFileError(f"{index} lists a shard outside its folder")
        files = [folder / s for s in shards]
        for f in files:
            if not f.is_file():
                raise ModelFileError(f"{index} lists the shard {f.name}, which is missing")
    else:
        raise ModelFileError(f"{folder} has neither model.safetensors nor {INDEX} "
                             "(codeassist loads safetensors weights only)")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        check_safetensors(f)
        tensors.update(load_tensors(f))
    return tensors


def map_hf_tensors(model: CausalLM, hf: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """Hugging Face tensor names → this module's state dict; refuses missing or extra tensors."""
    tensors = {k: v for k, v in hf.items() if not k.endswith(_IGNORED_SUFFIXES)}
    if model.tied_embeddings:
        embedding = f"{model.EMBEDDING}.weight"
        if embedding in tensors:
            tensors["lm_head.weight"] = tensors[embedding]  # tied: one table, wherever it was stored
    expected = set(model.state_dict())
    missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    family = family_name(model.config)
    if missing:
        raise ModelFileError(f"{where} lacks {len(missing)} tensor(s) a {family} model of its config.json "
                             f"needs, the first {missing[0]!r}")
    if extra:
        raise ModelFileError(f"{where} has {len(extra)} tensor(s) a {family} model of its config.json "
                             f"does not use, the first {extra[0]!r}")
    return tensors


def load_pretrained(path: str | os.PathLike[str], device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None) -> tuple[CausalLM, FamilyConfig]:
    """The model of a local Hugging Face folder, in eval mode, and its config.

    dtype casts the floating weights (None keeps the file's, often bfloat16). Raises
    ModelFileError with one sentence for anything unusable.
    """
    folder = Path(path)
    if family_of(folder) == "gpt2":
        from codeassist.model.hf_gpt2 import load_hf_gpt2

        gpt = load_hf_gpt2(folder)
        gpt = gpt.to(dtype=dtype) if dtype is not None else gpt
        return gpt.to(device).eval(), gpt.config
    config = hf_family_config(folder)
    model = empty_model(config)
    tensors = map_hf_tensors(model, read_hf_tensors(folder), str(folder))
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:
        detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise ModelFileError(f"{folder} does not match its config.json ({detail[:200]})") from None
    model.tie_weights()
    return model.to(device).eval(), config
