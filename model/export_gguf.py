"""GGUF files for llama.cpp and Ollama, written with the `gguf` package (llama.cpp's own writer).

Names, keys and type rules follow llama.cpp's convert_hf_to_gguf.py (GPT2Model): architecture
`gpt2`, tensors token_embd / position_embd / blk.N.{attn_norm, attn_qkv, attn_output, ffn_norm,
ffn_up, ffn_down} / output_norm / output, each with its bias. Our linear weights are already
(out, in), the layout GGUF wants, so nothing is transposed (HF's Conv1D ones would be).

Types: F32 by default; `f16` stores 2-D weights as F16; `q8_0` quantizes them with gguf's own
numpy Q8_0 (blocks of 32, one fp16 scale each, as llama.cpp's quantizer). As llama.cpp does, 1-D
tensors (norms, biases) stay F32, and so does the learned position table.

The vocabulary (model/tokenizer_export.py) is padded with UNUSED `[PADn]` tokens to the
embedding's rows, since llama.cpp takes its vocabulary size from the token list.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np

from codeassist.model.export import float_state
from codeassist.model.gpt import GPT
from codeassist.model.tokenizer import EOT_ID, FIM_MIDDLE_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID

# our name -> GGUF name
GPT2_NAMES = {
    "transformer.wte.weight": "token_embd.weight",
    "transformer.wpe.weight": "position_embd.weight",
    "transformer.ln_f.weight": "output_norm.weight",
    "transformer.ln_f.bias": "output_norm.bias",
}
GPT2_BLOCK_NAMES = {  # transformer.h.N.<module> -> blk.N.<name>
    "ln_1": "attn_norm",
    "attn.c_attn": "attn_qkv",
    "attn.c_proj": "attn_output",
    "ln_2": "ffn_norm",
    "mlp.c_fc": "ffn_up",
    "mlp.c_proj": "ffn_down",
}
FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
              "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
_KEEP_F32 = ("_norm.weight", "position_embd.weight")


def gguf_name(name: str) -> str:
    """The GGUF tensor name of one of our GPT-2 state-dict names."""
    if name in GPT2_NAMES:
        return GPT2_NAMES[name]
    _, _, n, *rest = name.split(".")
    module, kind = ".".join(rest[:-1]), rest[-1]
    return f"blk.{n}.{GPT2_BLOCK_NAMES[module]}.{kind}"


def gpt2_tensors(model: GPT) -> Iterator[tuple[str, np.ndarray]]:
    """(GGUF name, fp32 array) for every tensor; the tied head is written out as `output.weight`."""
    for name, tensor in float_state(model).items():
        array = tensor.numpy()
        yield gguf_name(name), array
        if name == "transformer.wte.weight":
            yield "output.weight", array  # llama.cpp's gpt2 graph reads the head from its own tensor


def write_gguf_gpt2(model: GPT, path: Path, gguf_type: str = "f32") -> None:
    c = model.config
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_name("codeassist")
    writer.add_context_length(c.block_size)
    writer.add_embedding_length(c.n_embd)
    writer.add_feed_forward_length(4 * c.n_embd)
    writer.add_block_count(c.n_layer)
    writer.add_head_count(c.n_head)
    writer.add_layer_norm_eps(c.layer_norm_eps)
    writer.add_file_type(FILE_TYPES[gguf_type])
    add_gpt2_vocab(writer)
    for name, array in gpt2_tensors(model):
        add_tensor(writer, name, array, gguf_type)
    finish(writer)


def add_gpt2_vocab(writer: gguf.GGUFWriter) -> None:
    from codeassist.model.tokenizer_export import gguf_vocab

    tokens, types, merges = gguf_vocab()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # llama.cpp's GPT-2 pre-tokenizer regex, the one ours uses
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(EOT_ID)
    writer.add_eos_token_id(EOT_ID)
    writer.add_pad_token_id(EOT_ID)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_uint32(gguf.Keys.Tokenizer.FIM_PRE_ID, FIM_PREFIX_ID)  # llama.cpp's /infill
    writer.add_uint32(gguf.Keys.Tokenizer.FIM_SUF_ID, FIM_SUFFIX_ID)
    writer.add_uint32(gguf.Keys.Tokenizer.FIM_MID_ID, FIM_MIDDLE_ID)


def add_tensor(writer: gguf.GGUFWriter, name: str, array: np.ndarray, gguf_type: str) -> None:
    """Add one tensor in the file's type; 1-D tensors, norms and position tables stay F32."""
    if gguf_type == "f32" or array.ndim < 2 or name.endswith(_KEEP_F32):
        writer.add_tensor(name, array.astype(np.float32))
        return
    qtype = gguf.GGMLQuantizationType.Q8_0
    if gguf_type == "f16" or array.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        writer.add_tensor(name, array.astype(np.float16))  # rows not a multiple of 32: F16, as llama.cpp
        return
    writer.add_tensor(name, gguf.quants.quantize(array.astype(np.float32), qtype), raw_dtype=qtype)


def finish(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
