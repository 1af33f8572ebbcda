"""The model families by name: each one's config class and module class.

A family's name is Hugging Face's `model_type` ("gpt2", "llama", "qwen2", "starcoder2",
"gpt_bigcode"); it is what a model file's `family` metadata holds (absent means "gpt2", the
files written before there were families). Model files, Hugging Face folders and quantization
all look families up here, so adding one is one line.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.nn import init

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
    """The module of a config, initialised as its layers' constructors do (see `empty_model` to load weights)."""
    return FAMILIES[family_name(config)][1](config)


def empty_model(config: FamilyConfig) -> CausalLM:
    """The module of a config with every tensor on the meta device and nothing initialised: the
    frame a loader fills with `load_state_dict(tensors, strict=True, assign=True)`.

    Building it inside `torch.device("meta")` alone still runs the layers' random initialisation
    on meta tensors. torch runs `normal_` there through its Python decompositions, and their first
    use imports sympy and torch's meta registrations: 74 MB of resident memory in every process
    that loads a model (measured: the language server's RSS after loading the default model
    went from 319 MB to 247 MB without it).
    """
    with torch.device("meta"), _meta_fills_skipped():
        return build_model(config)


_INIT_FILLS = ("normal_", "uniform_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
               "xavier_uniform_", "xavier_normal_", "zeros_", "ones_", "constant_", "orthogonal_")
_patch_lock = threading.Lock()


@contextmanager
def _meta_fills_skipped() -> Iterator[None]:
    """torch.nn.init's fills leave meta tensors alone (they hold no values) while this lasts;
    any other tensor is filled as usual, so another thread initialising a real model is unaffected."""
    def skipping(fill: Any) -> Any:
        def fill_unless_meta(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            return tensor if tensor.is_meta else fill(tensor, *args, **kwargs)
        return fill_unless_meta

    with _patch_lock:
        saved = {name: getattr(init, name) for name in _INIT_FILLS if hasattr(init, name)}
        for name, fill in saved.items():
            setattr(init, name, skipping(fill))
        try:
            yield
        finally:
            for name, fill in saved.items():
                setattr(init, name, fill)


def model_class(config: FamilyConfig) -> type[CausalLM]:
    return FAMILIES[family_name(config)][1]
