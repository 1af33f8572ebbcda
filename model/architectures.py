"""The model families by name: each one's config class and module class.

A family's name is Hugging Face's `model_type` ("gpt2", "llama", "qwen2", "starcoder2",
"gpt_bigcode"); it is what a model file's `family` metadata holds (absent means "gpt2", the
files written before there were families). Model files, Hugging Face folders and quantization
all look families up here, so adding one is one line.
"""

from __future__ import annotations

from typing import Any

from codeassist.model.bigcode import BigCode, BigCodeConfig
from codeassist.model.causal_lm import CausalLM
from codeassist.model.config import ModelConfig
from codeassist.model.gpt import GPT
from codeassist.model.llama import Llama, LlamaConfig, Starcoder2

FamilyConfig = ModelConfig | LlamaConfig | BigCodeConfig

FAMILIES: dict[str, tuple[type[Any], type[CausalLM]]] = {
    "gpt2": (ModelConfig, GPT),
    "llama": (LlamaConfig, Llama),
    "qwen2": (LlamaConfig, Llama),
    "gpt_bigcode": (BigCodeConfig, BigCode),
    "starcoder2": (LlamaConfig, Starcoder2),
}


def family_name(config: FamilyConfig) -> str:
    """The family of a config ("gpt2" for ours, which has no `family` field)."""
    return str(getattr(config, "family", "gpt2"))


def config_from_dict(family: str, data: dict[str, Any]) -> FamilyConfig:
    """A family's config from our model files' JSON; ValueError for an unknown family or key."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    config: FamilyConfig = FAMILIES[family][0].from_dict(data)
    if family_name(config) != family:
        raise ValueError(f"the config says family {family_name(config)!r}, the file {family!r}")
    return config


def build_model(config: FamilyConfig) -> CausalLM:
    """The (uninitialised) module of a config; call inside `torch.device("meta")` to load weights."""
    return FAMILIES[family_name(config)][1](config)


def model_class(config: FamilyConfig) -> type[CausalLM]:
    return FAMILIES[family_name(config)][1]
