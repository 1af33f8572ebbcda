"""Exports of the Llama family (`llama`, `qwen2`: Qwen2.5-Coder, DeepSeek-Coder, Code Llama shapes).

hf (also for GPTBigCode, whose module names are Hugging Face's as well): model/llama.py already
uses Hugging Face's module names, so the state dict is written as it is (a tied head left out),
with the config's `to_hf()` as config.json and the model's own tokenizer:
copied from the source folder, or rebuilt from a model file's metadata (its tokenizer.json and
bos/eos, model/tokenization.py).

gguf: llama.cpp's names (convert_hf_to_gguf.py, LlamaModel / Qwen2Model): token_embd,
blk.N.{attn_norm, attn_q, attn_k, attn_v (+bias), attn_output, ffn_norm, ffn_gate, ffn_up,
ffn_down}, output_norm, and output when the head is not tied (llama.cpp reuses token_embd
otherwise). Arch `llama` rotates pairs (x[2i], x[2i+1]) where Hugging Face rotates halves, so q
and k rows are permuted per head, exactly as convert_hf_to_gguf does; `qwen2` rotates halves in
llama.cpp too and is written unpermuted. The vocabulary comes from tokenizer.json (a byte-level BPE
only): tokens, merges, token types, and llama.cpp's pre-tokenizer name found from the split regex.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from codeassist.model.bigcode import BigCode
from codeassist.model.checkpoint import ModelFileError
from codeassist.model.llama import Llama, LlamaConfig

LLAMA_BLOCK_NAMES = {  # model.layers.N.<module> -> blk.N.<name>
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
LLAMA_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
               "lm_head.weight": "output.weight"}
# llama.cpp's name for each pre-tokenizer split regex (llama-vocab.cpp); ByteLevel's own regex is GPT-2's
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = {_QWEN2: "qwen2", _QWEN2.replace(r"\p{N}|", r"\p{N}{1,3}|"): "llama-bpe"}
# files of a source Hugging Face folder copied as they are into an hf export: its tokenizer, and
# its generation defaults (sampling settings, every end token) over the ones written here
SOURCE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                "merges.txt", "added_tokens.json", "generation_config.json")


class TokenizerExportError(ModelFileError):
    """The model's tokenizer cannot be written in the asked format; str() is one sentence."""


@dataclass(frozen=True)
class FamilyTokenizer:
    """A model's own tokenizer: its tokenizer.json, bos/eos ids, and the folder it came from if any."""

    tokenizer_json: str
    bos_id: int | None
    add_bos: bool
    eos_ids: tuple[int, ...]
    folder: Path | None = None

    @classmethod
    def from_metadata(cls, meta: dict[str, str], folder: Path | None = None) -> FamilyTokenizer:
        """From HFTokenizer.to_metadata() (a model file's metadata, or a folder read by from_folder)."""
        if "tokenizer_json" not in meta:
            raise TokenizerExportError("the model carries no tokenizer.json to export")
        try:
            extra = json.loads(meta.get("tokenizer_meta") or "{}")
            json.loads(meta["tokenizer_json"])
        except ValueError:
            raise TokenizerExportError("the model's tokenizer metadata is damaged (not JSON)") from None
        if not isinstance(extra, dict):
            raise TokenizerExportError("the model's tokenizer metadata is damaged (not an object)")
        bos = extra.get("bos_token_id")
        return cls(meta["tokenizer_json"], bos if isinstance(bos, int) else None,
                   bool(extra.get("add_bos_token")), tuple(int(i) for i in extra.get("eos_token_ids") or ()),
                   folder)

    @property
    def spec(self) -> dict[str, Any]:
        spec = json.loads(self.tokenizer_json)
        return spec if isinstance(spec, dict) else {}

    def content(self, token_id: int | None) -> str | None:
        """The text of a token id (added tokens first, then the vocabulary)."""
        if token_id is None:
            return None
        spec = self.spec
        for t in spec.get("added_tokens") or []:
            if t.get("id") == token_id:
                return str(t["content"])
        vocab = (spec.get("model") or {}).get("vocab") or {}
        return next((str(k) for k, v in vocab.items() if v == token_id), None)


# -- hf ---------------------------------------------------------------------------------------------

def hf_config(model: Llama | BigCode, tok: FamilyTokenizer, dtype: torch.dtype) -> dict[str, Any]:
    config = model.config.to_hf()
    config["torch_dtype"] = str(dtype).removeprefix("torch.")
    config["bos_token_id"] = tok.bos_id
    config["eos_token_id"] = tok.eos_ids[0] if tok.eos_ids else None
    return config


def write_hf_family(model: Llama | BigCode, dest: Path, tok: FamilyTokenizer) -> None:
    """Llama and GPTBigCode modules carry Hugging Face's names: the state dict goes out as it is."""
    from safetensors.torch import save_file

    dtype = model.anchor.dtype
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in model.state_dict().items()
               if not (name == "lm_head.weight" and model.tied_embeddings)}
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})
    _write_json(dest / "config.json", hf_config(model, tok, dtype))
    gen = {"bos_token_id": tok.bos_id, "eos_token_id": list(tok.eos_ids) if len(tok.eos_ids) > 1
           else (tok.eos_ids[0] if tok.eos_ids else None)}
    _write_json(dest / "generation_config.json", gen)
    copied = [f for f in SOURCE_FILES if tok.folder is not None and (tok.folder / f).is_file()]
    for name in copied:
        (dest / name).write_bytes((tok.folder / name).read_bytes())  # type: ignore[operator]
    if "tokenizer.json" not in copied:
        (dest / "tokenizer.json").write_text(tok.tokenizer_json, encoding="utf-8")
    if "tokenizer_config.json" not in copied:
        _write_json(dest / "tokenizer_config.json", {
            "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model.config.block_size,
            "bos_token": tok.content(tok.bos_id), "eos_token": tok.content(tok.eos_ids[0] if tok.eos_ids else None),
            "add_bos_token": tok.add_bos, "add_eos_token": False, "clean_up_tokenization_spaces": False})


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


# -- gguf -------------------------------------------------------------------------------------------

def gguf_name(name: str) -> str:
    if name in LLAMA_NAMES:
        return LLAMA_NAMES[name]
    _, _, n, *rest = name.split(".")  # model.layers.N.<module>.<weight|bias>
    return f"blk.{n}.{LLAMA_BLOCK_NAMES['.'.join(rest[:-1])]}.{rest[-1]}"


def permute_rope(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Rows of each head from halves order (HF) to interleaved pairs (llama.cpp's llama rope)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama_tensors(model: Llama) -> Iterator[tuple[str, np.ndarray]]:
    c = model.config
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.tied_embeddings:
            continue
        t = tensor.detach().to("cpu", torch.float32)
        if c.family == "llama" and ".q_proj." in name:
            t = permute_rope(t, c.n_head)
        elif c.family == "llama" and ".k_proj." in name:
            t = permute_rope(t, c.n_kv_head)
        yield gguf_name(name), t.contiguous().numpy()


def write_gguf_llama(model: Llama, path: Path, gguf_type: str, tok: FamilyTokenizer) -> None:
    from codeassist.model.export_gguf import FILE_TYPES, add_tensor, finish

    vocab = gguf_vocab(tok, model.config.vocab_size)  # before the writer opens: a refusal writes nothing
    c: LlamaConfig = model.config
    writer = gguf.GGUFWriter(str(path), c.family)
    writer.add_name("codeassist")
    writer.add_context_length(c.block_size)
    writer.add_embedding_length(c.n_embd)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_block_count(c.n_layer)
    writer.add_head_count(c.n_head)
    writer.add_head_count_kv(c.n_kv_head)
    writer.add_key_length(c.head_dim)
    writer.add_value_length(c.head_dim)
    writer.add_rope_dimension_count(c.head_dim)
    writer.add_rope_freq_base(c.rope_theta)
    if c.rope_linear_factor != 1.0:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(c.rope_linear_factor)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(c.vocab_size)
    writer.add_file_type(FILE_TYPES[gguf_type])
    add_family_vocab(writer, tok, vocab)
    for name, array in llama_tensors(model):
        add_tensor(writer, name, array, gguf_type)
    finish(writer)


@dataclass(frozen=True)
class GGUFVocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str


def gguf_vocab(tok: FamilyTokenizer, vocab_size: int) -> GGUFVocab:
    """Tokens (padded with UNUSED [PADn] to the embedding's rows), types, merges, pre-tokenizer name."""
    spec = tok.spec
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not _has_byte_level(spec):
        raise TokenizerExportError("GGUF export needs a byte-level BPE tokenizer.json (as Qwen2.5-Coder's); "
                                   "export with --format hf and convert that folder with llama.cpp's "
                                   "convert_hf_to_gguf.py")
    pre = pre_tokenizer_name(spec)
    tokens: dict[int, str] = {int(i): str(t) for t, i in (model.get("vocab") or {}).items()}
    types = dict.fromkeys(tokens, int(gguf.TokenType.NORMAL))
    for t in spec.get("added_tokens") or []:
        i, text = int(t["id"]), str(t["content"])
        tokens[i] = text
        control = t.get("special") or _looks_special(text)
        types[i] = int(gguf.TokenType.CONTROL if control else gguf.TokenType.USER_DEFINED)
    if tokens and max(tokens) >= vocab_size:
        raise TokenizerExportError(f"the tokenizer has ids up to {max(tokens)}, past the model's "
                                   f"{vocab_size} embedding rows")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return GGUFVocab([tokens.get(i, f"[PAD{i}]") for i in range(vocab_size)],
                     [types.get(i, int(gguf.TokenType.UNUSED)) for i in range(vocab_size)], merges, pre)


def _looks_special(text: str) -> bool:
    """Markers some tokenizer.json files add without the special flag (Qwen2.5's FIM tokens,
    DeepSeek's): convert_hf_to_gguf makes them CONTROL tokens too, so llama.cpp never prints them."""
    return (text.startswith("<|") and text.endswith("|>")) or (text.startswith("<｜") and text.endswith("｜>"))


def _components(node: Any) -> list[dict[str, Any]]:
    if not isinstance(node, dict):
        return []
    if node.get("type") == "Sequence":
        return [c for sub in node.get("pretokenizers") or node.get("decoders") or [] for c in _components(sub)]
    return [node]


def _has_byte_level(spec: dict[str, Any]) -> bool:
    return any(c.get("type") == "ByteLevel" for c in _components(spec.get("pre_tokenizer")))


def pre_tokenizer_name(spec: dict[str, Any]) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer, matched on all its steps: a step this does
    not know (Digits in another mode, Metaspace, another regex) is refused, never skipped."""
    steps: list[str] = []
    for c in _components(spec.get("pre_tokenizer")):
        kind = c.get("type")
        if kind == "ByteLevel":
            steps.append("ByteLevel+regex" if c.get("use_regex", True) else "ByteLevel")
        elif kind == "Digits" and c.get("individual_digits"):
            steps.append("Digits")
        elif kind == "Split" and str(c.get("behavior")).lower() == "isolated" and not c.get("invert"):
            steps.append(f"Split:{(c.get('pattern') or {}).get('Regex')}")
        else:
            steps.append(f"?{kind}")
    known: dict[tuple[str, ...], str] = {("ByteLevel+regex",): "gpt-2", ("Digits", "ByteLevel+regex"): "starcoder"}
    known.update({(f"Split:{regex}", "ByteLevel"): name for regex, name in PRE_TOKENIZERS.items()})
    name = known.get(tuple(steps))
    if name is None:
        raise TokenizerExportError("the tokenizer's pre-tokenizer is not one llama.cpp knows by name "
                                   f"({', '.join(sorted(known.values()))}); export with --format hf and "
                                   "convert that folder with llama.cpp's convert_hf_to_gguf.py")
    return name


def add_family_vocab(writer: gguf.GGUFWriter, tok: FamilyTokenizer, vocab: GGUFVocab) -> None:
    from codeassist.model.fim_templates import detect

    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    if tok.bos_id is not None:
        writer.add_bos_token_id(tok.bos_id)
    if tok.eos_ids:
        writer.add_eos_token_id(tok.eos_ids[0])
        writer.add_pad_token_id(tok.eos_ids[0])
    writer.add_add_bos_token(tok.add_bos)
    ids = {t: i for i, t in enumerate(vocab.tokens)}
    template = detect([t for t, i in ids.items() if vocab.types[i] != gguf.TokenType.NORMAL])
    if template is not None:  # llama.cpp's /infill; it also guesses these by text when absent
        for key, text in ((gguf.Keys.Tokenizer.FIM_PRE_ID, template.prefix),
                          (gguf.Keys.Tokenizer.FIM_SUF_ID, template.suffix),
                          (gguf.Keys.Tokenizer.FIM_MID_ID, template.middle)):
            if text in ids:
                writer.add_uint32(key, ids[text])
