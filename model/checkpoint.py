"""Model files: safetensors whose metadata carries everything needed to use them.

Metadata (all strings, as safetensors requires):
    format        "codeassist"
    version       "1"
    family        the model family, Hugging Face's model_type (model/architectures.py); absent
                  means "gpt2", so every file written before there were families still loads
    config        the family's config as JSON (ModelConfig for gpt2)
    tokenizer     the tokenizer name: tokenizer.TOKENIZER_NAME for ours, "hf" for a tokenizer.json
                  one, whose own keys (Tokenizer.to_metadata) travel beside it in the metadata
    quantization  JSON, {"scheme": "none"} for plain weights
    provenance    JSON: data, steps, tokens seen, validation loss, ...

ModelInfo.meta keeps the whole metadata, so model/tokenization.py rebuilds the tokenizer from
it; this module never imports a tokenizer library.

Nothing is parsed from file names, and pickles are never loaded: a file that is not
safetensors is refused with one sentence before any byte of it is interpreted as code.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from codeassist.model.architectures import (
    FamilyConfig,
    config_from_dict,
    empty_model,
    family_name,
)
from codeassist.model.causal_lm import CausalLM
from codeassist.model.errors import UserFacingError
from codeassist.model.tokenizer import TOKENIZER_NAME

FORMAT = "codeassist"
FORMAT_VERSION = "1"
MAX_HEADER = 100 * 1024 * 1024
HF_TOKENIZER = "hf"  # the tokenizer name of a Hugging Face tokenizer.json carried in the metadata
TOKENIZERS = (TOKENIZER_NAME, HF_TOKENIZER)
# the keys this module writes; a tokenizer's own metadata may add others, never replace these
_OWN_KEYS = ("format", "version", "family", "config", "quantization", "provenance")


class ModelFileError(UserFacingError):
    """A model file is missing, truncated, foreign or unusable; str() is one sentence for the user."""


@dataclass(frozen=True)
class ModelInfo:
    config: FamilyConfig
    tokenizer: str
    quantization: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    family: str = "gpt2"
    meta: dict[str, str] = field(default_factory=dict)  # the file's whole metadata (tokenizer keys too)

    @property
    def scheme(self) -> str:
        return str(self.quantization.get("scheme", "none"))

    @property
    def tokenizer_meta(self) -> dict[str, str]:
        """The tokenizer's metadata (`tokenizer` and its own keys), to write into a derived file."""
        return {k: v for k, v in self.meta.items() if k not in _OWN_KEYS} or {"tokenizer": self.tokenizer}


# Loaders for quantized model files register here (model/quantized.py), keyed by scheme:
# they build the model from the file's tensors. Plain weights use _load_plain.
QuantizedLoader = Callable[[ModelInfo, dict[str, torch.Tensor]], CausalLM]
QUANTIZED_LOADERS: dict[str, QuantizedLoader] = {}


def check_safetensors(path: Path) -> None:
    """Refuse anything that is not a complete safetensors file, before parsing it."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(9)
    except FileNotFoundError:
        raise ModelFileError(f"model file not found: {path}") from None
    except IsADirectoryError:
        raise ModelFileError(f"{path} is a folder, not a model file") from None
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror}") from None
    if size == 0:
        raise ModelFileError(f"model file {path} is empty")
    if head[8:9] != b"{":  # a safetensors header is JSON right after its 8-byte length
        if head[:1] == b"\x80" or head[:2] == b"PK":
            raise ModelFileError(f"{path} is a pickle or a zip-pickled checkpoint; codeassist never loads "
                                 "pickles, only safetensors model files")
        if len(head) < 9:
            raise ModelFileError(f"model file {path} is truncated")
        raise ModelFileError(f"{path} is not a safetensors model file")
    (n,) = struct.unpack("<Q", head[:8])
    if n > MAX_HEADER or n < 2:
        raise ModelFileError(f"{path} is not a safetensors model file")
    if 8 + n > size:
        raise ModelFileError(f"model file {path} is truncated")
    with path.open("rb") as f:
        f.seek(8)
        try:
            header = json.loads(f.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            raise ModelFileError(f"{path} is not a safetensors model file") from None
    if 8 + n + end > size:
        raise ModelFileError(f"model file {path} is truncated")


def read_info(path: str | os.PathLike[str]) -> ModelInfo:
    """The metadata of a codeassist model file, without loading its weights."""
    path = Path(path)
    check_safetensors(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a valid safetensors model file ({_short(exc)})") from None
    return _parse_meta(path, meta)


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def _parse_meta(path: Path, meta: dict[str, str]) -> ModelInfo:
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path} is a safetensors file but not a codeassist model "
                             "(no codeassist metadata); load Hugging Face model folders with --model DIR")
    if meta.get("version") != FORMAT_VERSION:
        raise ModelFileError(f"{path} has model format version {meta.get('version')!r}; "
                             f"this codeassist reads version {FORMAT_VERSION}")
    family = meta.get("family", "gpt2")
    try:
        config = config_from_dict(family, json.loads(meta["config"]))
        quant = json.loads(meta.get("quantization", '{"scheme": "none"}'))
        prov = json.loads(meta.get("provenance", "{}"))
        tokenizer = meta["tokenizer"]
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path} has damaged metadata ({_short(exc)})") from None
    if not isinstance(quant, dict) or not isinstance(prov, dict):
        raise ModelFileError(f"{path} has damaged metadata (quantization/provenance are not objects)")
    if tokenizer not in TOKENIZERS:
        raise ModelFileError(f"{path} uses tokenizer {tokenizer!r}; this codeassist reads "
                             f"{' and '.join(map(repr, TOKENIZERS))}")
    return ModelInfo(config=config, tokenizer=tokenizer, quantization=quant, provenance=prov,
                     family=family, meta=dict(meta))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                tensors[key] = f.get_tensor(key)
        return tensors
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path} is damaged and cannot be read ({_short(exc)})") from None


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None) -> tuple[CausalLM, ModelInfo]:
    """Load a model file into its family's module in eval mode; dtype casts floating weights
    (None keeps them)."""
    path = Path(path)
    info = read_info(path)
    tensors = load_tensors(path)
    if info.scheme == "none":
        model = _load_plain(path, info, tensors)
    elif info.scheme in QUANTIZED_LOADERS:
        model = QUANTIZED_LOADERS[info.scheme](info, tensors)
    else:
        _register_quantized_loaders()
        if info.scheme not in QUANTIZED_LOADERS:
            raise ModelFileError(f"{path} uses quantization scheme {info.scheme!r}, which this codeassist "
                                 "does not know")
        model = QUANTIZED_LOADERS[info.scheme](info, tensors)
    if dtype is not None and info.scheme == "none":
        model = model.to(dtype=dtype)
    return model.to(device).eval(), info


def _register_quantized_loaders() -> None:
    with contextlib.suppress(ImportError):
        import codeassist.model.quantized  # noqa: F401  (registers its loaders on import)


def _load_plain(path: Path, info: ModelInfo, tensors: dict[str, torch.Tensor]) -> CausalLM:
    model = empty_model(info.config)
    tensors = dict(tensors)
    embedding = f"{model.EMBEDDING}.weight"
    if model.tied_embeddings and "lm_head.weight" not in tensors and embedding in tensors:
        tensors["lm_head.weight"] = tensors[embedding]
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path} does not match its own config ({_short(exc)})") from None
    model.tie_weights()  # re-tie after assign
    return model


def model_metadata(config: FamilyConfig, provenance: dict[str, Any] | None = None,
                   quantization: dict[str, Any] | None = None,
                   tokenizer: dict[str, str] | None = None) -> dict[str, str]:
    """A model file's metadata; `tokenizer` is Tokenizer.to_metadata() (None: ours)."""
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "family": family_name(config),
        "config": config.to_json(),
        "tokenizer": TOKENIZER_NAME,
        "quantization": json.dumps(quantization or {"scheme": "none"}, sort_keys=True),
        "provenance": json.dumps(provenance or {}, sort_keys=True, default=str),
    }
    if tokenizer:
        clash = sorted(set(tokenizer) & set(_OWN_KEYS))
        if clash or tokenizer.get("tokenizer", TOKENIZER_NAME) not in TOKENIZERS:
            raise ValueError(f"tokenizer metadata may not set {clash or ['tokenizer']}")
        meta.update(tokenizer)
    return meta


def save_tensors_atomic(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor],
                        metadata: dict[str, str]) -> None:
    """Write safetensors to a temporary file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a model file is an ordinary file
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model: CausalLM, path: str | os.PathLike[str], provenance: dict[str, Any] | None = None,
               dtype: torch.dtype | None = None, tokenizer: dict[str, str] | None = None) -> None:
    """Save plain weights (a tied head is stored once, as the embedding); `tokenizer` is the
    tokenizer's metadata (Tokenizer.to_metadata(); None for ours)."""
    state = {k: v for k, v in model.state_dict().items() if not (model.tied_embeddings and k == "lm_head.weight")}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_tensors_atomic(path, state, model_metadata(model.config, provenance, tokenizer=tokenizer))
