"""Tiny random Hugging Face models of each family, built by transformers inside the tests.

Every parameter gets seeded noise (transformers initialises biases to zero and norms to one, which
would let a wrong bias or norm mapping pass), then the model is saved with save_pretrained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

VOCAB = 300

# name -> (transformers config class name, kwargs): each family with the variants that matter
SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    # untied head, grouped-query attention (2 key/value heads for 4 query heads)
    "llama": ("LlamaConfig", dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                  num_hidden_layers=2, intermediate_size=128, vocab_size=VOCAB,
                                  max_position_embeddings=128, tie_word_embeddings=False)),
    # head_dim given apart from hidden_size / heads (4 x 32 = 128 wide attention in a 64-wide model)
    "llama_head_dim": ("LlamaConfig", dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=1,
                                           head_dim=32, num_hidden_layers=2, intermediate_size=128,
                                           vocab_size=VOCAB, max_position_embeddings=128)),
    # tied head, biases on all four projections and the MLP, linear RoPE scaling (DeepSeek-Coder's)
    "llama_tied_bias": ("LlamaConfig", dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                                            num_hidden_layers=2, intermediate_size=96, vocab_size=VOCAB,
                                            max_position_embeddings=128, tie_word_embeddings=True,
                                            attention_bias=True, mlp_bias=True,
                                            rope_parameters={"rope_type": "linear", "factor": 4.0,
                                                             "rope_theta": 100000.0})),
    # Qwen2.5-Coder's layout: q/k/v biases, GQA, tied head
    "qwen2": ("Qwen2Config", dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                  num_hidden_layers=2, intermediate_size=128, vocab_size=VOCAB,
                                  max_position_embeddings=128, tie_word_embeddings=True)),
    # StarCoder's layout: one shared key/value head
    "bigcode": ("GPTBigCodeConfig", dict(n_embd=64, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=128,
                                         multi_query=True, bos_token_id=0, eos_token_id=0)),
    # LayerNorm, GELU MLP, biases everywhere, GQA, tied
    "starcoder2": ("Starcoder2Config", dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                            num_hidden_layers=2, intermediate_size=128, vocab_size=VOCAB,
                                            max_position_embeddings=128, use_bias=True)),
    # without multi_query: per-head [q k v] layout
    "bigcode_mha": ("GPTBigCodeConfig", dict(n_embd=64, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=128,
                                             multi_query=False, bos_token_id=0, eos_token_id=0)),
}


def build_hf(name: str, seed: int = 0) -> Any:
    import transformers

    cls_name, kwargs = SPECS[name]
    config = getattr(transformers, cls_name)(**kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def save_hf(name: str, folder: Path, seed: int = 0, **save_kwargs: Any) -> Any:
    model = build_hf(name, seed)
    model.save_pretrained(folder, **save_kwargs)
    return model
