"""Model files: safetensors whose metadata carries everything needed to use them.

Metadata (all strings, as safetensors requires):
    format        "codeassist"
    version       "1"
    config        ModelConfig as JSON
    tokenizer     the tokenizer name (see tokenizer.TOKENIZER_NAME)
    quantization  JSON, {"scheme": "none"} for plain weights
    provenance    JSON: data, steps, tokens seen, validation loss, ...

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

from codeassist.model.config import ModelConfig
from codeassist.model.gpt import GPT
from codeassist.model.tokenizer import TOKENIZER_NAME

FORMAT = "codeassist"
FORMAT_VERSION = "1"
MAX_HEADER = 100 * 1024 * 1024


class ModelFileError(Exception):
    """A model file is missing, truncated, foreign or unusable; str() is one sentence for the user."""


@dataclass(frozen=True)
class ModelInfo:
    config: ModelConfig
    tokenizer: str
    quantization: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return str(self.quantization.get("scheme", "none"))


# Loaders for quantized model files register here (model/quantized.py), keyed by scheme:
# they build the model from the file's tensors. Plain weights use _load_plain.
QuantizedLoader = Callable[[ModelInfo, dict[str, torch.Tensor]], GPT]
QUANTIZED_LOADERS: dict[str, QuantizedLoader] = {}


def _sniff(path: Path) -> None:
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
    _sniff(path)
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
                             "(no codeassist metadata); import Hugging Face GPT-2 folders with --model DIR")
    if meta.get("version") != FORMAT_VERSION:
        raise ModelFileError(f"{path} has model format version {meta.get('version')!r}; "
                             f"this codeassist reads version {FORMAT_VERSION}")
    try:
        config = ModelConfig.from_dict(json.loads(meta["config"]))
        quant = json.loads(meta.get("quantization", '{"scheme": "none"}'))
        prov = json.loads(meta.get("provenance", "{}"))
        tokenizer = meta["tokenizer"]
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelFileError(f"{path} has damaged metadata ({_short(exc)})") from None
    if not isinstance(quant, dict) or not isinstance(prov, dict):
        raise ModelFileError(f"{path} has damaged metadata (quantization/provenance are not objects)")
    if tokenizer != TOKENIZER_NAME:
        raise ModelFileError(f"{path} uses tokenizer {tokenizer!r}; this codeassist has {TOKENIZER_NAME!r}")
    return ModelInfo(config=config, tokenizer=tokenizer, quantization=quant, provenance=prov)


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
               dtype: torch.dtype | None = None) -> tuple[GPT, ModelInfo]:
    """Load a model file into a GPT in eval mode; dtype casts floating weights (None keeps them)."""
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


def _load_plain(path: Path, info: ModelInfo, tensors: dict[str, torch.Tensor]) -> GPT:
    with torch.device("meta"):
        model = GPT(info.config)
    tensors = dict(tensors)
    if "lm_head.weight" not in tensors and "transformer.wte.weight" in tensors:
        tensors["lm_head.weight"] = tensors["transformer.wte.weight"]
    try:
        model.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path} does not match its own config ({_short(exc)})") from None
    model.lm_head.weight = model.transformer.wte.weight  # re-tie after assign
    return model


def model_metadata(config: ModelConfig, provenance: dict[str, Any] | None = None,
                   quantization: dict[str, Any] | None = None) -> dict[str, str]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": config.to_json(),
        "tokenizer": TOKENIZER_NAME,
        "quantization": json.dumps(quantization or {"scheme": "none"}, sort_keys=True),
        "provenance": json.dumps(provenance or {}, sort_keys=True, default=str),
    }


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


def save_model(model: GPT, path: str | os.PathLike[str], provenance: dict[str, Any] | None = None,
               dtype: torch.dtype | None = None) -> None:
    """Save plain weights (the tied head is stored once, as transformer.wte.weight)."""
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    save_tensors_atomic(path, state, model_metadata(model.config, provenance))
