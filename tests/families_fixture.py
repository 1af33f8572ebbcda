"""A complete tiny Hugging Face folder for each open family, built inside the tests.

The integration tests load these the way a user's download is loaded: config.json and
model.safetensors written by transformers' save_pretrained (a tiny random Qwen2, Llama or
GPTBigCode), and tokenizer.json, tokenizer_config.json and generation_config.json written by the
`tokenizers` library with the family's own FIM and end-of-text tokens. Nothing is downloaded.

Each family gets the tokenizer of a model users run on it: Qwen2.5-Coder's for qwen2,
DeepSeek-Coder's for llama (a BOS first, `<｜fim▁begin｜>` markers) and StarCoder's for gpt_bigcode.
"""

from __future__ import annotations

import inspect
import json
import json.decoder
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

CORPUS = inspect.getsource(json.decoder) + "\n# café, naïve ✓\n\tx = 'tab'\n"

# family (config.json's model_type) -> how its tokenizer is laid out. Specials are flagged special;
# markers are added but not flagged, as Qwen2.5's and DeepSeek's published files have them.
TOKENIZERS: dict[str, dict[str, Any]] = {
    "qwen2": {
        "template": "qwen",
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "markers": ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
                    "<|file_sep|>"],
        "config": {"eos_token": "<|endoftext|>", "bos_token": None, "add_bos_token": False},
        "generation": {"eos_token_id": ["<|endoftext|>", "<|im_end|>"]},
    },
    "llama": {
        "template": "deepseek",
        "specials": ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"],
        "markers": ["<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>", "<|EOT|>"],
        "config": {"bos_token": {"content": "<｜begin▁of▁sentence｜>"},
                   "eos_token": {"content": "<｜end▁of▁sentence｜>"}, "add_bos_token": True},
        "generation": {"bos_token_id": "<｜begin▁of▁sentence｜>", "eos_token_id": "<｜end▁of▁sentence｜>"},
    },
    "gpt_bigcode": {
        "template": "starcoder",
        "specials": ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<filename>",
                     "<file_sep>"],
        "markers": [],
        "config": {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"},
        "generation": {"bos_token_id": "<|endoftext|>", "eos_token_id": "<|endoftext|>"},
    },
}
FAMILIES = list(TOKENIZERS)
POSITIONS = 256


@dataclass(frozen=True)
class TinyFolder:
    family: str  # config.json's model_type
    template: str  # the FIM template's name in model/fim_templates.py
    path: Path
    hf_model: Any  # the transformers model that wrote model.safetensors (eval mode)


def write_tokenizer(path: Path, family: str, vocab: int = 400) -> dict[str, Any]:
    """tokenizer.json and tokenizer_config.json; returns generation_config.json's content (ids)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    spec = TOKENIZERS[family]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=spec["specials"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator([CORPUS], trainer)
    tk.add_tokens([AddedToken(m, special=False, normalized=False) for m in spec["markers"]])
    path.mkdir(parents=True, exist_ok=True)
    tk.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(spec["config"]))
    ids = tk.get_vocab()
    generation = {k: [ids[x] for x in v] if isinstance(v, list) else ids[v] for k, v in spec["generation"].items()}
    generation["n_vocab"] = tk.get_vocab_size()
    return generation


def _config(family: str, vocab: int, eos: int, bos: int | None, positions: int) -> Any:
    import transformers

    if family == "qwen2":  # Qwen2.5-Coder's layout: q/k/v biases, GQA, tied head
        return transformers.Qwen2Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                        num_hidden_layers=2, intermediate_size=128, vocab_size=vocab,
                                        max_position_embeddings=positions, tie_word_embeddings=True,
                                        eos_token_id=eos)
    if family == "llama":  # DeepSeek-Coder's: untied head, GQA here
        return transformers.LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                        num_hidden_layers=2, intermediate_size=128, vocab_size=vocab,
                                        max_position_embeddings=positions, tie_word_embeddings=False,
                                        bos_token_id=bos, eos_token_id=eos)
    # StarCoder's: one shared key/value head
    return transformers.GPTBigCodeConfig(n_embd=64, n_layer=2, n_head=4, vocab_size=vocab, n_positions=positions,
                                         multi_query=True, bos_token_id=bos, eos_token_id=eos)


def build_folder(path: Path, family: str, seed: int = 0, positions: int = POSITIONS) -> TinyFolder:
    """A complete tiny HF folder of `family` at `path` (config, weights, tokenizer, generation config)."""
    import transformers

    generation = write_tokenizer(path, family)
    n_vocab = generation.pop("n_vocab")
    vocab = (n_vocab + 63) // 64 * 64  # padded rows past the tokenizer, as published models have
    eos = generation["eos_token_id"]
    first_eos = eos[0] if isinstance(eos, list) else eos
    config = _config(family, vocab, first_eos, generation.get("bos_token_id"), positions)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()  # type: ignore[no-untyped-call]
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # seeded noise everywhere: zero biases and unit norms would hide mapping bugs
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    model.save_pretrained(path)
    # save_pretrained wrote its own generation_config.json; the family's (with its eos list) is the one
    (path / "generation_config.json").write_text(json.dumps(generation))
    return TinyFolder(family, TOKENIZERS[family]["template"], path, model)


def hf_decode(folder: Path, ids: list[int] | tuple[int, ...]) -> str:
    """The `tokenizers` library's own decoding, specials kept: an independent reading of ids."""
    from tokenizers import Tokenizer

    return str(Tokenizer.from_file(str(folder / "tokenizer.json")).decode(list(ids), skip_special_tokens=False))
