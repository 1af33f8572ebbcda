"""GGUF for GPTBigCode (StarCoder, StarCoderBase-1B, tiny_starcoder, SantaCoder): llama.cpp's arch `starcoder`.

Names as convert_hf_to_gguf.py's StarCoderModel writes them: token_embd, position_embd,
blk.N.{attn_norm, attn_qkv, attn_output, ffn_norm, ffn_up, ffn_down} with biases, output_norm,
and output when the head is not tied. llama.cpp reads the fused attn_qkv as [q | k | v] with
head_count_kv key/value heads: the multi-query layout as Hugging Face stores it. Without
multi_query Hugging Face interleaves each head's (q, k, v) rows, which are reordered here.
The vocabulary is the model's tokenizer.json (model/export_llama.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import torch

from codeassist.model.bigcode import BigCode
from codeassist.model.export_llama import FamilyTokenizer, add_family_vocab, gguf_vocab

NAMES = {"transformer.wte.weight": "token_embd.weight", "transformer.wpe.weight": "position_embd.weight",
         "transformer.ln_f.weight": "output_norm.weight", "transformer.ln_f.bias": "output_norm.bias",
         "lm_head.weight": "output.weight"}
BLOCK_NAMES = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
               "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}


def gguf_name(name: str) -> str:
    if name in NAMES:
        return NAMES[name]
    _, _, n, *rest = name.split(".")  # transformer.h.N.<module>.<weight|bias>
    return f"blk.{n}.{BLOCK_NAMES['.'.join(rest[:-1])]}.{rest[-1]}"


def bigcode_tensors(model: BigCode) -> Iterator[tuple[str, np.ndarray]]:
    c = model.config
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and model.tied_embeddings:
            continue
        t = tensor.detach().to("cpu", torch.float32)
        if ".attn.c_attn." in name and not c.multi_query:  # rows (n_head, 3, hs) -> (3, n_head, hs)
            t = t.reshape(c.n_head, 3, c.head_dim, *t.shape[1:]).transpose(0, 1).reshape(t.shape)
        yield gguf_name(name), t.contiguous().numpy()


def write_gguf_bigcode(model: BigCode, path: Path, gguf_type: str, tok: FamilyTokenizer) -> None:
    from codeassist.model.export_gguf import FILE_TYPES, add_tensor, finish

    c = model.config
    vocab = gguf_vocab(tok, c.vocab_size)  # before the writer opens: a refusal writes nothing
    writer = gguf.GGUFWriter(str(path), "starcoder")
    writer.add_name("codeassist")
    writer.add_context_length(c.block_size)
    writer.add_embedding_length(c.n_embd)
    writer.add_feed_forward_length(c.n_inner)
    writer.add_block_count(c.n_layer)
    writer.add_head_count(c.n_head)
    writer.add_head_count_kv(c.n_kv_head)
    writer.add_layer_norm_eps(c.layer_norm_eps)
    writer.add_file_type(FILE_TYPES[gguf_type])
    add_family_vocab(writer, tok, vocab)
    for name, array in bigcode_tensors(model):
        add_tensor(writer, name, array, gguf_type)
    finish(writer)
