"""Hugging Face GPT-2 weights: load a local folder, or download `gpt2` into the cache once.

HF's GPT-2 stores its linear layers as Conv1D, (in, out), so those weights are transposed.
Its 50,257-token embedding is extended to our vocabulary; the new rows (space runs, FIM
specials, padding) start at the mean embedding so fine-tuning begins from a sensible place.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from codeassist.model.architectures import empty_model
from codeassist.model.checkpoint import ModelFileError
from codeassist.model.config import ModelConfig
from codeassist.model.gpt import GPT
from codeassist.model.tokenizer import N_GPT2, VOCAB_SIZE

log = logging.getLogger(__name__)

HF_ENDPOINT = "https://huggingface.co"
_FILES = ("config.json", "model.safetensors")
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def config_from_hf(path: Path) -> ModelConfig:
    try:
        raw = json.loads((path / "config.json").read_text())
        return ModelConfig(block_size=raw["n_positions"], n_layer=raw["n_layer"], n_head=raw["n_head"],
                           n_embd=raw["n_embd"], layer_norm_eps=raw.get("layer_norm_epsilon", 1e-5))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path} is not a Hugging Face GPT-2 folder (config.json: {exc})") from None


def _read_hf_tensors(path: Path) -> dict[str, torch.Tensor]:
    st = path / "model.safetensors"
    if st.exists():
        try:
            with safe_open(str(st), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError) as exc:
            raise ModelFileError(f"{st} is damaged ({str(exc)[:120]})") from None
    binf = path / "pytorch_model.bin"
    if binf.exists():
        try:
            # weights_only refuses arbitrary objects: only tensors and plain containers load
            sd = torch.load(binf, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ...
            raise ModelFileError(f"{binf} is not a plain weights file ({str(exc)[:120]})") from None
        return dict(sd)
    raise ModelFileError(f"{path} has neither model.safetensors nor pytorch_model.bin")


def load_hf_gpt2(path: str | os.PathLike[str]) -> GPT:
    path = Path(path)
    config = config_from_hf(path)
    hf = _read_hf_tensors(path)
    sd: dict[str, torch.Tensor] = {}
    for k, v in hf.items():
        k = k.removeprefix("transformer.")
        if k.endswith(".attn.bias") or k.endswith(".attn.masked_bias") or k == "lm_head.weight":
            continue  # causal-mask buffers; the head is tied to wte
        name = f"transformer.{k}"
        if any(name.endswith(s) for s in _CONV1D):
            v = v.t()
        sd[name] = v.float().contiguous()
    wte = sd.get("transformer.wte.weight")
    if wte is None or wte.size(0) != N_GPT2:
        raise ModelFileError(f"{path} is not a GPT-2 checkpoint with the {N_GPT2}-token GPT-2 vocabulary")
    extra = wte.mean(dim=0, keepdim=True).expand(VOCAB_SIZE - N_GPT2, -1)
    sd["transformer.wte.weight"] = torch.cat([wte, extra], dim=0)
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    model = empty_model(config)
    assert isinstance(model, GPT)
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path} does not match GPT-2's layout ({str(exc)[:160]})") from None
    model.lm_head.weight = model.transformer.wte.weight
    return model.eval()


def ensure_downloaded(name: str = "gpt2") -> Path:
    """The cached folder of HF model `name`, downloading it first if it is not there."""
    from codeassist.model.store import cache_dir

    dest = cache_dir() / "hf" / name
    if all((dest / f).exists() for f in _FILES):
        return dest
    download(name, dest, os.environ.get("CODEASSIST_HF_ENDPOINT", HF_ENDPOINT))
    return dest


def download(name: str, dest: Path, endpoint: str = HF_ENDPOINT) -> None:
    """Fetch config.json and model.safetensors; each file lands whole (temporary file, rename)."""
    import httpx

    dest.mkdir(parents=True, exist_ok=True)
    for fname in _FILES:
        url = f"{endpoint.rstrip('/')}/{name}/resolve/main/{fname}"
        tmp = dest / f".{fname}.part"
        log.info("downloading %s", url)
        try:
            with httpx.stream("GET", url, follow_redirects=True, timeout=60) as r:
                r.raise_for_status()
                with open(tmp, "wb") as f:
                    for chunk in r.iter_bytes(1 << 20):
                        f.write(chunk)
        except httpx.HTTPError as exc:
            tmp.unlink(missing_ok=True)
            # httpx's own message runs over several lines: the status or the error's kind is enough
            why = (f"{exc.response.status_code} for {fname}" if isinstance(exc, httpx.HTTPStatusError)
                   else type(exc).__name__)
            raise ModelFileError(f"could not download {name} from {endpoint} ({why}); "
                                 "check the network, or pass a local folder with --model") from None
        os.replace(tmp, dest / fname)
