"""`codeassist export`: our models in the formats other runtimes load, for a team that outgrows one machine.

- `hf`: a Hugging Face folder (config.json, model.safetensors in HF's names, generation_config.json,
  tokenizer.json and its two config files) that transformers and vLLM load as GPT-2.
- `gguf`: one file that llama.cpp and Ollama load (model/export_gguf.py).

GPT-2 models (ours, and HF GPT-2 folders) are written here; the open families (llama, qwen2,
gpt_bigcode, from a Hugging Face folder, hf:ORG/NAME or one of our model files) by
model/export_llama.py and, for StarCoder's GGUF, model/export_bigcode.py.

Our GPT is HF's GPT-2 with a bigger vocabulary (50,304 rows: space runs, FIM specials, padding), so
the weights carry over unchanged except HF's Conv1D layout, (in, out), for the four block linears
(model/hf_gpt2.py does the reverse). The tokenizer is rebuilt for HF `tokenizers` and llama.cpp by
model/tokenizer_export.py. A quantized model (the embedded default is int8) is dequantized first.

Output is written next to its destination under a temporary name and renamed into place, so an
interrupted or failed export leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from codeassist.model.causal_lm import CausalLM
from codeassist.model.checkpoint import ModelFileError
from codeassist.model.config import ModelConfig
from codeassist.model.gpt import GPT
from codeassist.model.tokenizer import EOT_ID

if TYPE_CHECKING:
    from codeassist.model.export_llama import FamilyTokenizer
    from codeassist.model.fim_templates import FimTemplate

FORMATS = ("hf", "gguf")
GGUF_TYPES = ("f32", "f16", "q8_0")
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


class ExportError(ModelFileError):
    """The export cannot be done as asked (format, destination, model); str() is one sentence."""


# -- our GPT-2 as Hugging Face GPT-2 ----------------------------------------------------------------

def hf_gpt2_config(config: ModelConfig) -> dict[str, object]:
    """config.json for GPT2LMHeadModel with our shape; vocab_size is the embedding's rows."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,  # 4 * n_embd, as ours
        "activation_function": "gelu_new",  # the tanh approximation (model/gpt.py gelu_tanh)
        "layer_norm_epsilon": config.layer_norm_eps,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "use_cache": True,
        "tie_word_embeddings": True,
        "bos_token_id": EOT_ID,
        "eos_token_id": EOT_ID,
        "torch_dtype": "float32",
    }


def float_state(model: GPT) -> dict[str, torch.Tensor]:
    """Our state dict in fp32 on the CPU, without the tied head; a bias-free model gets zero biases,
    since HF's GPT-2 and llama.cpp's always have them (zeros compute the same)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        if name != "lm_head.weight":
            out[name] = tensor.detach().to("cpu", torch.float32).contiguous()
    if not model.config.bias:
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear | torch.nn.LayerNorm) and name != "lm_head":
                out.setdefault(f"{name}.bias", torch.zeros(module.weight.shape[0]))  # out_features
    return out


def hf_gpt2_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """The state dict in HF GPT-2's names and layout (the head left tied to wte)."""
    return {name: t.t().contiguous() if name.endswith(_CONV1D) else t
            for name, t in float_state(model).items()}


def write_hf_gpt2(model: GPT, dest: Path) -> None:
    """Write the HF folder's files into `dest` (an existing, empty folder)."""
    from safetensors.torch import save_file

    from codeassist.model.tokenizer_export import hf_tokenizer_files

    save_file(hf_gpt2_tensors(model), str(dest / "model.safetensors"), metadata={"format": "pt"})
    _write_json(dest / "config.json", hf_gpt2_config(model.config))
    _write_json(dest / "generation_config.json", {"bos_token_id": EOT_ID, "eos_token_id": EOT_ID,
                                                   "pad_token_id": EOT_ID})
    for name, text in hf_tokenizer_files(model.config.block_size).items():
        (dest / name).write_text(text, encoding="utf-8")


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# -- reading the model ------------------------------------------------------------------------------

EXPORTABLE = ("gpt2", "llama", "qwen2", "gpt_bigcode")


@dataclass(frozen=True)
class Source:
    """A model to export: a float module of its family, and (open families) its own tokenizer."""

    model: CausalLM
    family: str
    tokenizer: FamilyTokenizer | None = None


def load_source(model: str | os.PathLike[str]) -> Source:
    """From a name, a model file, a Hugging Face folder or hf:ORG/NAME; quantized files are dequantized."""
    from codeassist.model.checkpoint import load_model
    from codeassist.model.families import family_of, is_hf_folder, load_pretrained
    from codeassist.model.quantized import dequantize_model
    from codeassist.model.store import resolve_model

    path, _ = resolve_model(model)
    if path.is_dir() and is_hf_folder(path):
        family = family_of(path)
        _check_family(family, path)
        module, _config = load_pretrained(path)
        meta = _folder_tokenizer_meta(path) if family != "gpt2" else {}
        folder: Path | None = path
    else:
        module, info = load_model(path)
        family, meta, folder = info.family, info.meta, None
        _check_family(family, path)
        module = dequantize_model(module).eval()
    if family == "gpt2":
        return Source(module, family)
    from codeassist.model.export_llama import FamilyTokenizer

    return Source(module, family, FamilyTokenizer.from_metadata(meta, folder))


def _check_family(family: str, path: Path) -> None:
    if family not in EXPORTABLE:
        raise ExportError(f"{path} is a {family} model; export supports {', '.join(EXPORTABLE)}")


def _folder_tokenizer_meta(folder: Path) -> dict[str, str]:
    from codeassist.model.hf_tokenizer import HFTokenizer
    from codeassist.model.tokenization import TokenizerFileError

    try:
        return HFTokenizer.from_folder(folder).to_metadata()
    except TokenizerFileError as exc:
        raise ExportError(str(exc)) from None


# -- the command ------------------------------------------------------------------------------------

def export_model(model: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str], *,
                 force: bool = False, gguf_type: str | None = None) -> Path:
    """Export `model` to `out` in format `fmt`; returns the path written.

    Checks come before any work: the format, the GGUF type, the destination. The model is read
    next (ModelFileError when it cannot be), and the output appears only once it is complete.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    if gguf_type is not None and fmt != "gguf":
        raise ExportError("--gguf-type applies only to --format gguf")
    gguf_type = gguf_type or "f32"
    if gguf_type not in GGUF_TYPES:
        raise ExportError(f"unknown GGUF type {gguf_type!r}; choose one of: {', '.join(GGUF_TYPES)}")
    dest = Path(out).expanduser()
    _check_destination(dest, want_dir=fmt == "hf", force=force)
    source = load_source(model)
    with _staged(dest, is_dir=fmt == "hf") as tmp:
        write(source, fmt, tmp, gguf_type)
    return dest


def write(source: Source, fmt: str, dest: Path, gguf_type: str = "f32") -> None:
    """Write `source` in `fmt` to `dest` (an empty folder for hf, a file path for gguf)."""
    if source.family == "gpt2":
        assert isinstance(source.model, GPT)
        if fmt == "hf":
            write_hf_gpt2(source.model, dest)
        else:
            from codeassist.model.export_gguf import write_gguf_gpt2

            write_gguf_gpt2(source.model, dest, gguf_type)
        return
    from codeassist.model.bigcode import BigCode
    from codeassist.model.export_llama import write_gguf_llama, write_hf_family
    from codeassist.model.llama import Llama

    assert isinstance(source.model, Llama | BigCode) and source.tokenizer is not None
    if fmt == "hf":
        write_hf_family(source.model, dest, source.tokenizer)
    elif isinstance(source.model, BigCode):
        from codeassist.model.export_bigcode import write_gguf_bigcode

        write_gguf_bigcode(source.model, dest, gguf_type, source.tokenizer)
    else:
        write_gguf_llama(source.model, dest, gguf_type, source.tokenizer)


def fim_template_of(model: str | os.PathLike[str]) -> FimTemplate | None:
    """The FIM template of a model without loading its weights: ours for GPT-2 models, the one its
    tokenizer's special tokens name for the open families (None when none is known)."""
    from codeassist.model.checkpoint import read_info
    from codeassist.model.families import family_of, is_hf_folder
    from codeassist.model.fim_templates import TEMPLATES
    from codeassist.model.store import resolve_model

    path, _ = resolve_model(model)
    if path.is_dir() and is_hf_folder(path):
        if family_of(path) == "gpt2":
            return TEMPLATES["codeassist"]
        meta = _folder_tokenizer_meta(path)
    else:
        info = read_info(path)
        if info.family == "gpt2":
            return TEMPLATES["codeassist"]
        meta = info.meta
    try:
        name = json.loads(meta.get("tokenizer_meta") or "{}").get("template")
    except (ValueError, AttributeError):
        return None
    return TEMPLATES.get(str(name))


def ollama_modelfile(gguf_path: Path, template: FimTemplate | None) -> str:
    """An Ollama Modelfile for an exported GGUF: with a FIM template, Ollama's /api/generate takes
    `suffix` (codeassist's ollama dialect sends it) and lays the prompt out as the model was trained."""
    lines = [f"FROM {gguf_path.resolve()}"]
    if template is not None:
        fim = template.build("{{ .Prompt }}", "{{ .Suffix }}")
        lines.append(f'TEMPLATE """{{{{- if .Suffix }}}}{fim}{{{{- else }}}}{{{{ .Prompt }}}}{{{{- end }}}}"""')
        lines += [f'PARAMETER stop "{stop}"' for stop in template.stops]
    return "\n".join(lines) + "\n"


def _check_destination(dest: Path, want_dir: bool, force: bool) -> None:
    if dest.exists() or dest.is_symlink():
        if not force:
            raise ExportError(f"{dest} already exists; pass --force to replace it")
        if want_dir and not dest.is_dir():
            raise ExportError(f"{dest} is a file, and a Hugging Face export is a folder; choose another --out")
        if not want_dir and dest.is_dir():
            raise ExportError(f"{dest} is a folder, and a GGUF export is one file; choose another --out")
    if dest.parent.exists() and not dest.parent.is_dir():
        raise ExportError(f"{dest.parent} is not a folder")


@contextlib.contextmanager
def _staged(dest: Path, is_dir: bool) -> Iterator[Path]:
    """A temporary sibling of `dest` to write into; renamed onto `dest` only when the body succeeds.
    Folders made for it are removed again on failure."""
    made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {dest.parent} ({exc.strerror})") from None
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
        os.close(fd)
        tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod((0o777 if is_dir else 0o666) & ~umask)  # mkdtemp/mkstemp make them private
    try:
        yield tmp
        for f in tmp.iterdir() if is_dir else ():
            f.chmod(0o666 & ~umask)  # some writers (safetensors) make their files private too
        if dest.is_dir() and not dest.is_symlink():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)  # a folder cannot be renamed over: move the old one aside first
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        for folder in made:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
