"""The tokenizer interface (model/tokenization.py) with tiny Hugging Face tokenizers built here.

Each family's tokenizer is a ByteLevel BPE trained on a few KB of Python with `tokenizers`,
with that family's special tokens added the way its published tokenizer.json has them (Qwen's
and DeepSeek's FIM markers are added tokens that are not flagged special), and saved with a
tokenizer_config.json and generation_config.json. Nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import json.decoder
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from codeassist.model.chooser import mask_banned
from codeassist.model.completion import build_prompt, complete
from codeassist.model.config import ModelConfig
from codeassist.model.copy import CopyIndex, find_candidates
from codeassist.model.engine import Engine, GenerationRequest, StopRules
from codeassist.model.fim_templates import TEMPLATES
from codeassist.model.gpt import GPT
from codeassist.model.healing import PrefixConstraint, allowed_tokens
from codeassist.model.hf_tokenizer import HFTokenizer
from codeassist.model.tokenization import (
    Tokenizer,
    TokenizerFileError,
    codeassist_tokenizer,
    tokenizer_from_metadata,
)

CORPUS = inspect.getsource(json.decoder) + "\n# café, naïve, 中文 ✓ 🐍\n\tx = 'tab'\n"
# (specials: flagged special; markers: added but not flagged, as Qwen2.5's and DeepSeek's files have them)
FAMILIES: dict[str, dict[str, Any]] = {
    "qwen": {
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "markers": ["<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
                    "<|file_sep|>"],
        "config": {"eos_token": "<|endoftext|>", "bos_token": None, "add_bos_token": False},
        "generation": {"eos_token_id": ["<|endoftext|>", "<|im_end|>"]},
    },
    "deepseek": {
        "specials": ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"],
        "markers": ["<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>", "<|EOT|>"],
        "config": {"bos_token": {"content": "<｜begin▁of▁sentence｜>"},
                   "eos_token": {"content": "<｜end▁of▁sentence｜>"}, "add_bos_token": True},
        "generation": {"bos_token_id": "<｜begin▁of▁sentence｜>", "eos_token_id": "<｜end▁of▁sentence｜>"},
    },
    "starcoder": {
        "specials": ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<filename>",
                     "<file_sep>"],
        "markers": [],
        "config": {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"},
        "generation": {"bos_token_id": "<|endoftext|>", "eos_token_id": "<|endoftext|>"},
    },
}
TEXTS = [
    "def main():\n    return 0\n",
    "class A:\n\tdef f(self):  # café 中文 🐍\n\t\tpass\n\n\n",
    "x = '<|endoftext|>' + \"<fim_prefix>\" + '<|fim_middle|>' + '<｜fim▁hole｜>' + '<|im_end|>'",
    "   \n  \r\n" + "        if x:\n            y()\n",
]


def build_folder(path: Path, family: str, vocab: int = 420) -> Path:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    spec = FAMILIES[family]
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=spec["specials"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator([CORPUS], trainer)
    tk.add_tokens([AddedToken(m, special=False, normalized=False) for m in spec["markers"]])
    path.mkdir(parents=True, exist_ok=True)
    tk.save(str(path / "tokenizer.json"))
    ids = tk.get_vocab()

    def resolve(v: Any) -> Any:
        return [ids[x] for x in v] if isinstance(v, list) else ids[v]

    (path / "tokenizer_config.json").write_text(json.dumps(spec["config"]))
    (path / "generation_config.json").write_text(json.dumps({k: resolve(v) for k, v in spec["generation"].items()}))
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    return {f: build_folder(root / f, f) for f in FAMILIES}


@pytest.fixture(scope="module")
def toks(folders: dict[str, Path]) -> dict[str, HFTokenizer]:
    return {f: HFTokenizer.from_folder(p) for f, p in folders.items()}


def hf_decode(folder: Path, ids: list[int]) -> str:
    """The `tokenizers` library's own decoding, specials kept: an independent reading of the ids."""
    from tokenizers import Tokenizer

    return str(Tokenizer.from_file(str(folder / "tokenizer.json")).decode(ids, skip_special_tokens=False))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_round_trip_bytes_and_specials_as_text(toks: dict[str, HFTokenizer], family: str) -> None:
    tk = toks[family]
    for text in TEXTS:
        ids = tk.encode(text)
        assert tk.decode(ids) == text
        assert b"".join(tk.token_bytes(i) for i in ids) == text.encode("utf-8")
        assert not any(tk.is_special(i) for i in ids), "a special string in a document must stay text"
    for s in [*FAMILIES[family]["specials"], *FAMILIES[family]["markers"]]:
        i = tk.special_id(s)
        assert tk.is_special(i) and tk.token_bytes(i) == b""
        assert len(tk.encode(s)) > 1 and tk.decode(tk.encode(s)) == s
    assert tk.is_special(tk.n_vocab) and tk.token_bytes(tk.n_vocab + 5) == b""
    assert tk.decode([tk.special_id(FAMILIES[family]["specials"][0]), *tk.encode("ok")]) == "ok"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fim_prompt_is_the_documented_template(folders: dict[str, Path], toks: dict[str, HFTokenizer],
                                               family: str) -> None:
    tk = toks[family]
    assert tk.template is TEMPLATES[family]
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    ids = tk.fim_ids(tk.encode(prefix), tk.encode(suffix))
    if family == "deepseek":
        assert ids[0] == tk.bos_id == tk.special_id("<｜begin▁of▁sentence｜>")
        ids = ids[1:]
    else:
        assert tk.bos_id is None
    assert hf_decode(folders[family], ids).encode("utf-8") == TEMPLATES[family].build(prefix, suffix).encode("utf-8")
    # the completion path's prompt: the same layout (healing takes the last prefix token out)
    prompt = build_prompt(prefix, suffix, 512, tokenizer=tk)
    body = list(prompt.ids[1:] if family == "deepseek" else prompt.ids)
    healed = prefix.encode()[:len(prefix.encode()) - len(prompt.forced_prefix)].decode()
    assert prompt.forced_prefix == tk.token_bytes(tk.encode(prefix)[-1])
    assert hf_decode(folders[family], body) == TEMPLATES[family].build(healed, suffix)


def test_eos_and_stops_from_the_config_files(folders: dict[str, Path], toks: dict[str, HFTokenizer],
                                             tmp_path: Path) -> None:
    qwen = toks["qwen"]
    eot, im_end = qwen.special_id("<|endoftext|>"), qwen.special_id("<|im_end|>")
    assert qwen.eot_id == eot
    want = {eot, im_end} | {qwen.special_id(s) for s in ("<|fim_pad|>", "<|file_sep|>", "<|repo_name|>",
                                                         "<|fim_prefix|>")}
    assert qwen.stop_ids == frozenset(want)
    assert qwen.special_id("<|fim_middle|>") not in qwen.stop_ids
    # generation_config.json's eos (an int here) comes first; tokenizer_config's eos still stops
    folder = build_folder(tmp_path / "q", "qwen")
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": im_end}))
    other = HFTokenizer.from_folder(folder)
    assert other.eot_id == im_end and eot in other.stop_ids
    deepseek = toks["deepseek"]
    assert deepseek.eot_id == deepseek.special_id("<｜end▁of▁sentence｜>")
    assert deepseek.special_id("<|EOT|>") in deepseek.stop_ids
    assert toks["starcoder"].stop_ids >= {toks["starcoder"].special_id(s) for s in ("<|endoftext|>", "<file_sep>")}


def test_no_template_means_prefix_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = build_folder(tmp_path / "plain", "qwen")
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if "fim" not in t["content"]]
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    with caplog.at_level(logging.WARNING):
        tk = HFTokenizer.from_folder(folder)
    assert tk.template is None and not tk.fim
    assert "no fill-in-the-middle template" in caplog.text
    prompt = build_prompt("def f():\n    return ", "\nf()\n", 256, tokenizer=tk)
    assert prompt.ids[0] == tk.eot_id and tk.decode(prompt.ids) + prompt.forced_prefix.decode() == "def f():\n    return "
    with pytest.raises(ValueError):
        tk.fim_ids([1], [2])


def test_missing_or_broken_files_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(TokenizerFileError, match=r"has no tokenizer\.json") as info:
        HFTokenizer.from_folder(tmp_path)
    assert "\n" not in str(info.value)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerFileError, match="not JSON"):
        HFTokenizer.from_folder(tmp_path)
    with pytest.raises(TokenizerFileError, match="knows"):
        tokenizer_from_metadata({"tokenizer": "sentencepiece-42"})


def test_metadata_round_trip(toks: dict[str, HFTokenizer]) -> None:
    assert tokenizer_from_metadata({"tokenizer": "gpt2-ws24-fim"}) is codeassist_tokenizer()
    assert tokenizer_from_metadata({}) is codeassist_tokenizer()
    assert codeassist_tokenizer().to_metadata() == {"tokenizer": "gpt2-ws24-fim"}
    for tk in toks.values():
        meta = tk.to_metadata()
        assert meta["tokenizer"] == "hf" and all(isinstance(v, str) for v in meta.values())
        back = tokenizer_from_metadata(meta)
        assert isinstance(back, HFTokenizer)
        assert (back.stop_ids, back.bos_id, back.eot_id, back.template, back.n_vocab) == \
               (tk.stop_ids, tk.bos_id, tk.eot_id, tk.template, tk.n_vocab)
        for text in TEXTS:
            assert back.encode(text) == tk.encode(text)


def test_ours_keeps_its_ids() -> None:
    from codeassist.model import tokenizer as tok

    ours = codeassist_tokenizer()
    assert ours.fim_ids([1, 2], [3]) == tok.build_fim_ids([1, 2], [3]) == [tok.FIM_SUFFIX_ID, 3, tok.FIM_PREFIX_ID,
                                                                          1, 2, tok.FIM_MIDDLE_ID]
    assert ours.fim_ids([1], [3], spm=False) == tok.build_fim_ids([1], [3], spm=False)
    assert ours.lead_ids() == [tok.EOT_ID] and ours.bos_id is None
    assert ours.stop_ids == {tok.EOT_ID, tok.FIM_PREFIX_ID, tok.FIM_MIDDLE_ID, tok.FIM_SUFFIX_ID}
    assert ours.special_id("<|fim_middle|>") == tok.FIM_MIDDLE_ID
    ids = ours.encode(TEXTS[1])
    assert b"".join(ours.token_bytes(i) for i in ids) == TEXTS[1].encode()
    assert ours.token_bytes(tok.EOT_ID) == b"" and ours.token_bytes(tok.VOCAB_SIZE - 1) == b""
    assert ours.is_special(tok.VOCAB_SIZE - 1) and not ours.is_special(ids[0])


def build_sentencepiece(path: Path) -> Path:
    """A Llama-style tokenizer.json: BPE over "▁"-spaced pieces with <0xNN> byte fallback, the dummy
    "▁" prepended by the normalizer, and Code Llama's markers stored with their space ("▁<PRE>")."""
    import string

    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for c in ["▁", *string.ascii_letters, *string.digits, *string.punctuation, "\n", "\t"]:
        vocab.setdefault(c, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in ("▁def", "▁return", "▁main", "▁▁", "▁▁▁▁", "():"):
        for k in range(1, len(word)):
            merges.append((word[:k], word[k]))
            vocab.setdefault(word[:k + 1], len(vocab))
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    tk.add_special_tokens(["<unk>", "<s>", "</s>"])
    tk.add_tokens([AddedToken(t, special=False, normalized=False) for t in ("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>")])
    path.mkdir(parents=True, exist_ok=True)
    tk.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                            "add_bos_token": True}))
    return path


def test_sentencepiece_bytes_and_code_llama_layout(tmp_path: Path) -> None:
    tk = HFTokenizer.from_folder(build_sentencepiece(tmp_path))
    assert tk.template is TEMPLATES["codellama"] and tk.bos_id == 1
    assert tk.stop_ids == {2, tk.special_id("▁<EOT>")}
    for text in ("def main():\n    return 'café' 🐍", " leading space", "\ttab\n\n"):
        ids = tk.encode(text)  # no dummy "▁": the pieces of a prompt concatenate to its bytes
        assert b"".join(tk.token_bytes(i) for i in ids) == text.encode("utf-8")
        assert tk.decode(ids) == text
    assert [tk.token_bytes(i) for i in tk.encode("é")] == [b"\xc3", b"\xa9"]  # <0xC3><0xA9>
    assert tk.token_bytes(tk.encode(" return")[0]) == b" return"
    ids = tk.fim_ids(tk.encode("x = "), tk.encode("\n"))
    pre, suf, mid = (tk.special_id(m) for m in ("<PRE>", "<SUF>", "<MID>"))
    # <s> ▁<PRE> " " prefix ▁<SUF> suffix ▁<MID>: the spaces before <SUF> and <MID> are in the markers
    assert ids == [1, pre, *tk.encode(" "), *tk.encode("x = "), suf, *tk.encode("\n"), mid]


# -- the completion path with an HF tokenizer and a tiny random GPT --------------------------------

def tiny_engine(tk: Tokenizer, seed: int = 0, block_size: int = 128) -> Engine:
    torch.manual_seed(seed)
    vocab = (tk.n_vocab + 63) // 64 * 64  # padded, as model vocabularies are: the padding must never come out
    model = GPT(ModelConfig(block_size=block_size, vocab_size=vocab, n_layer=2, n_head=2, n_embd=32))
    model.init_weights(seed)
    return Engine(model, torch.device("cpu"), torch.float32, tokenizer=tk)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_healed_completions_begin_with_the_forced_text(toks: dict[str, HFTokenizer], family: str) -> None:
    tk = toks[family]
    engine = tiny_engine(tk)
    assert engine.tokenizer is tk
    for prefix in ("def main():\n    retu", "import js", "x = decoder.", "class A:\n    "):
        prompt = build_prompt(prefix, "\n\nmain()\n", 100, tokenizer=tk)
        assert prompt.forced_prefix
        for seed, temperature in ((None, 0.0), (3, 1.0)):
            from codeassist.model.sampling import SamplingParams

            result = engine.generate(GenerationRequest(prompt=prompt.ids, forced_prefix=prompt.forced_prefix,
                                                       seed=seed, sampling=SamplingParams(temperature=temperature),
                                                       stop=StopRules(max_new_tokens=12, stop_on_eos=False)))
            assert result.text.encode("utf-8").startswith(prompt.forced_prefix), (prefix, result.text)
            assert not any(tk.is_special(t) for t in result.tokens)
        text, _ = complete(engine, prefix, "\n\nmain()\n", max_new_tokens=6)
        assert isinstance(text, str)
    # the healing tables are the tokenizer's own: every allowed id spells a prefix of the rest or covers it
    rest = b"retu"
    for i in allowed_tokens(rest, tk):
        b = tk.token_bytes(i)
        assert b and (b.startswith(rest) or rest.startswith(b))
    assert set(allowed_tokens(rest, tk)) != set(allowed_tokens(rest))  # not ours
    c = PrefixConstraint(b"    ", tk)
    masked = c.mask(torch.zeros(engine.config.vocab_size))
    assert all(tk.token_bytes(i)[:3] == b"   " for i in torch.nonzero(masked == 0).flatten().tolist())


def test_specials_that_are_no_stop_are_masked(toks: dict[str, HFTokenizer]) -> None:
    tk = toks["qwen"]
    engine = tiny_engine(tk)
    logits = torch.zeros(engine.config.vocab_size)
    kept = torch.isfinite(mask_banned(logits, engine.tokenizer, True))
    assert kept[tk.special_id("<|endoftext|>")] and kept[tk.special_id("<|im_end|>")]
    assert not kept[tk.special_id("<|im_start|>")] and not kept[tk.special_id("<|fim_middle|>")]
    assert not kept[tk.n_vocab:].any() and kept[tk.encode("def")[0]]
    none = torch.isfinite(mask_banned(logits, engine.tokenizer, False))
    assert not none[tk.special_id("<|endoftext|>")] and none[tk.encode("def")[0]]
    # a stop id ends the completion as eos: a model that puts all its mass there
    engine.model.lm_head.weight.data.zero_()
    bias = torch.full((engine.config.vocab_size,), -10.0)
    bias[tk.special_id("<|im_end|>")] = 10.0
    engine.model.lm_head.register_forward_hook(lambda m, i, o: o + bias)
    engine.reset_prefix()
    result = engine.generate(GenerationRequest(prompt=tuple(tk.encode("x = 1\n")), stop=StopRules(max_new_tokens=4)))
    assert result.stop_reason == "eos" and result.tokens == []


def test_copy_candidates_with_an_hf_tokenizer(toks: dict[str, HFTokenizer]) -> None:
    tk = toks["qwen"]
    other = "def scan(s, idx):\n    value, end = scanner.scan_once(s, idx)\n    return value\n"
    index = CopyIndex([tk.encode(other)], tk)
    typed = "    value, end = scanner.scan"
    ids = tk.encode(typed)
    found = find_candidates([(index, None)], ids[:-1], tk.decode(ids[-1:]), typed=ids, tokenizer=tk)
    assert found and found[0].text == tk.decode(ids[-1:]) + "_once(s, idx)"
    # the engine takes a copy candidate the model does not find absurd, in the tokenizer's ids; the
    # prompt builder heals back to the word's start, so the candidates begin there
    engine = tiny_engine(tk)
    from codeassist.model.engine import CopyParams

    prompt = build_prompt(typed, "", 100, tokenizer=tk)
    found = find_candidates([(index, None)], list(prompt.tail), prompt.forced, typed=ids, tokenizer=tk)
    assert found and found[0].text == prompt.forced + "_once(s, idx)"
    result = engine.generate(GenerationRequest(prompt=prompt.ids, forced_prefix=prompt.forced_prefix,
                                               copy=CopyParams(candidates=(found[0].text,), min_logprob=-1e9),
                                               stop=StopRules(max_new_tokens=32)))
    assert result.copied == found[0].text and result.text == found[0].text


class _Wide(Tokenizer):
    """Only a vocabulary size: Qwen's 151,936 ids (the copy index reads no bytes in matches)."""

    name, n_vocab, eot_id, bos_id, stop_ids, template = "wide", 151_936, 0, None, frozenset({0}), None

    def encode(self, text: str) -> list[int]:
        return []

    def decode(self, ids: Any) -> str:
        return ""

    def token_bytes(self, token_id: int) -> bytes:
        return b"x"

    def is_special(self, token_id: int) -> bool:
        return token_id == 0

    def special_id(self, text: str) -> int:
        raise KeyError(text)

    def special_ids(self) -> frozenset[int]:
        return frozenset({0})

    def to_metadata(self) -> dict[str, str]:
        return {"tokenizer": "wide"}


def test_copy_keys_fit_large_vocabularies() -> None:
    # with 17 bits a key, (7, 0, 131072) and (7, 1, 0) packed to the same int64
    a, b = [7, 0, 131_072, 42], [7, 1, 0, 43]
    index = CopyIndex([a, b], _Wide())
    ends, lengths = index.matches(a[:3])
    assert [int(index.tokens[e]) for e in ends] == [42] and lengths.tolist() == [3]
    ends, _ = index.matches([9, 150_000, 151_935, 7, 1, 0])
    assert [int(index.tokens[e]) for e in ends] == [43]
    assert isinstance(index.keys, np.ndarray) and index.keys.dtype == np.int64


def test_lsp_pipeline_builds_its_prompt_in_the_backends_tokenizer(folders: dict[str, Path],
                                                                 toks: dict[str, HFTokenizer]) -> None:
    from codeassist.lsp.backends import FakeBackend
    from codeassist.lsp.context import build_context
    from codeassist.lsp.pipeline import Pipeline
    from codeassist.lsp.prompt import prompt_for as lsp_prompt
    from codeassist.lsp.settings import Settings

    tk = toks["qwen"]
    fake = FakeBackend(lambda r: "scan_once(s, idx)")
    fake.tokenizer = tk  # type: ignore[attr-defined]
    doc = "import json\n\ndef f(s):\n    return \n\nf('1')\n"
    ctx = build_context("file:///a.py", "python", doc, doc.index("return ") + 7)
    got = asyncio.run(Pipeline(fake, Settings()).complete(ctx))
    assert got.text == "scan_once(s, idx)"
    sent = fake.requests[0].prompt
    assert sent == lsp_prompt(ctx, Settings().max_prompt_tokens, tokenizer=tk)
    assert sent.ids != lsp_prompt(ctx, Settings().max_prompt_tokens).ids  # not ours
    text = hf_decode(folders["qwen"], list(sent.ids))
    assert text.startswith("<|fim_prefix|>") and text.endswith("<|fim_middle|>") and "<|fim_suffix|>" in text
    assert text == TEMPLATES["qwen"].build(sent.prefix[:len(sent.prefix) - len(sent.forced)], sent.suffix)


def test_remote_text_stream_reads_the_tokenizers_bytes(toks: dict[str, HFTokenizer]) -> None:
    from codeassist.model.textstream import TextStream

    tk = toks["deepseek"]
    stream = TextStream(b"", ("\n",), tk)
    out = "".join(stream.push(t) for t in tk.encode("x = 'café'\ny = 2"))
    assert out + stream.finish() == "x = 'café'"
    # a stray byte, then a character split over two tokens: shown as decode shows it, never a
    # U+FFFD for the half character
    byte = {tk.token_bytes(i): i for i in range(tk.n_vocab) if len(tk.token_bytes(i)) == 1}
    ids = [byte[b"\xff"], byte[b"\xd7"], byte[b"\xbc"]]
    stream = TextStream(tokenizer=tk)
    pieces = [stream.push(i) for i in ids]
    assert pieces == ["\ufffd", "", "\u05fc"] and stream.finish() == ""
    assert "".join(pieces) == tk.decode(ids) == "\ufffd\u05fc"


# -- loading: a Hugging Face folder of another family, and a model file that carries its tokenizer --

def save_tiny_qwen2(folder: Path, vocab: int, positions: int = 32768, seed: int = 0) -> None:
    """A random Qwen2 folder as Hugging Face writes it (config.json, model.safetensors with its
    tensor names), made with our own module, whose names are Hugging Face's: no transformers
    import (half a minute on a loaded machine); families' tests check that layout against it."""
    from safetensors.torch import save_file

    from codeassist.model.architectures import build_model
    from codeassist.model.llama import LlamaConfig

    raw = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 32,
           "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "intermediate_size": 64,
           "vocab_size": vocab, "max_position_embeddings": positions, "tie_word_embeddings": True,
           "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "hidden_act": "silu"}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(raw))
    model = build_model(LlamaConfig.from_hf(raw))
    gen = torch.Generator().manual_seed(seed)
    state = {k: (torch.randn(v.shape, generator=gen) * 0.05).contiguous()
             for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_engine_loads_an_hf_folder_with_its_tokenizer_and_a_capped_cache(folders: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    import shutil

    from codeassist.model.checkpoint import save_model

    folder = tmp_path / "tiny-qwen"
    shutil.copytree(folders["qwen"], folder)
    tk = HFTokenizer.from_folder(folder)
    save_tiny_qwen2(folder, tk.n_vocab + 20)
    engine = Engine.load(str(folder), device="cpu")
    assert isinstance(engine.tokenizer, HFTokenizer) and engine.tokenizer.template is TEMPLATES["qwen"]
    assert engine.config.block_size == 32768 and engine.context_tokens == 4096
    prefix, suffix = "def main():\n    retu", "\n\nmain()\n"
    prompt = build_prompt(prefix, suffix, 256, tokenizer=engine.tokenizer)
    request = GenerationRequest(prompt=prompt.ids, forced_prefix=prompt.forced_prefix,
                                stop=StopRules(max_new_tokens=8, stop_on_eos=False))
    first = engine.generate(request)
    assert first.text.encode().startswith(prompt.forced_prefix)
    assert {a.kv_cache.k.shape[2] for a in engine.model.attention_layers()} == {4096}
    # a model file with the tokenizer in its metadata loads with that tokenizer, and answers the same
    path = tmp_path / "qwen.safetensors"
    save_model(engine.model, path, tokenizer=engine.tokenizer.to_metadata())
    again = Engine.load(path, device="cpu")
    assert isinstance(again.tokenizer, HFTokenizer) and again.tokenizer.stop_ids == engine.tokenizer.stop_ids
    assert again.tokenizer.encode(CORPUS[:500]) == engine.tokenizer.encode(CORPUS[:500])
    assert again.generate(request).tokens == first.tokens


def test_a_folder_without_tokenizer_json_is_one_sentence(tmp_path: Path) -> None:
    from codeassist.model.checkpoint import ModelFileError

    save_tiny_qwen2(tmp_path, 64)
    with pytest.raises(ModelFileError, match="no tokenizer") as info:
        Engine.load(str(tmp_path), device="cpu")
    assert "\n" not in str(info.value)


def test_workspace_index_rebuilds_in_the_models_tokenizer(toks: dict[str, HFTokenizer], tmp_path: Path) -> None:
    from codeassist.lsp.workspace import WorkspaceIndex

    tk = toks["starcoder"]
    (tmp_path / "lib.py").write_text("def load(path):\n    return decoder.raw_decode(path, idx=0)\n")
    docs: dict[str, tuple[str, int, str]] = {}
    index = WorkspaceIndex(lambda: docs)
    index.start([tmp_path])
    assert index.wait(60) and index.tokenizer is codeassist_tokenizer()
    ours_tokens = index.stats().tokens
    index.set_tokenizer(tk)
    assert index.tokenizer is tk and index.wait(60)
    assert index.stats().tokens == len(tk.encode((tmp_path / "lib.py").read_text())) != ours_tokens
    typed = "x = decoder.raw_"
    uri = "file:///scratch/a.py"
    docs[uri] = ("/scratch/a.py", 1, typed)
    ids = tk.encode(typed)
    found = index.candidates(uri, len(typed), ids[:-1], tk.decode(ids[-1:]), typed=ids)
    assert found and found[0].text == tk.decode(ids[-1:]) + "decode(path, idx=0)"


def test_language_server_pipeline_with_a_local_hf_model(folders: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    from codeassist.lsp.backends import LocalBackend
    from codeassist.lsp.context import build_context
    from codeassist.lsp.pipeline import Pipeline
    from codeassist.lsp.prompt import prompt_for as lsp_prompt
    from codeassist.lsp.settings import Settings

    folder = tmp_path / "tiny-qwen"
    shutil.copytree(folders["qwen"], folder)
    save_tiny_qwen2(folder, HFTokenizer.from_folder(folder).n_vocab + 20, positions=2048)  # no room for our ids
    backend = LocalBackend(str(folder), "cpu", threads=1)
    backend.start()
    assert backend.wait_ready(120), backend.status().reason
    pipe = Pipeline(backend, Settings(cache=False, time_budget_ms=30000, max_tokens=8))
    tk = pipe.tokenizer
    assert isinstance(tk, HFTokenizer) and tk.template is TEMPLATES["qwen"]
    doc = "import json\n\ndef load(s):\n    return json.lo\n\nload('1')\n"
    ctx = build_context("file:///a.py", "python", doc, doc.index("json.lo") + 7)

    async def run() -> Any:
        try:
            return await pipe.complete(ctx, invoked=True)
        finally:
            await backend.aclose()

    got = asyncio.run(run())
    assert got.reason is None or "dropped" in got.reason or "nothing" in got.reason, got.reason
    want = lsp_prompt(ctx, min(Settings().max_prompt_tokens, 2048 - 8), tokenizer=tk)
    assert got.prompt_tokens == len(want.ids) and want.ids[0] == tk.special_id("<|fim_prefix|>")


def test_repository_layout_goes_before_the_fim_prompt(toks: dict[str, HFTokenizer], folders: dict[str, Path]) -> None:
    """Qwen2.5-Coder's repository layout, as its model card writes it, byte for byte: the other
    files, the file's own header, then the FIM prompt; a model without the layout gets comments."""
    from codeassist.model.prompting import RepoContext

    prefix, suffix = "def main():\n    total = 0\n    ", "\n    return total\n"
    repo = RepoContext("lib", (("a.py", "x = 1"), ("b.py", "def total():\n    pass")), "c.py")
    tk = toks["qwen"]
    prompt = build_prompt(prefix, suffix, 512, heal=False, tokenizer=tk, context=("# unused\n",), repo=repo)
    t = TEMPLATES["qwen"]
    want = t.repo_context("lib", repo.files) + t.current_file("c.py") + t.build(prefix, suffix)
    assert hf_decode(folders["qwen"], list(prompt.ids)) == want
    assert prompt.repo == repo and prompt.context == ""
    # a tight budget keeps the files that fit, in order, and never outgrows it
    small = build_prompt(prefix, suffix, 60 + len(tk.encode(prefix + suffix)), heal=False, tokenizer=tk, repo=repo)
    assert small.repo is not None and small.repo.files == repo.files[:len(small.repo.files)]
    assert len(small.ids) <= 60 + len(tk.encode(prefix + suffix))
    # StarCoder's template has no repository layout here: the context goes in as comments
    star = build_prompt(prefix, suffix, 512, heal=False, tokenizer=toks["starcoder"], context=("# from a.py\n",),
                        repo=repo)
    assert star.repo is None and star.context == "# from a.py\n"


def test_the_editor_sends_snippets_in_the_repository_layout(toks: dict[str, HFTokenizer],
                                                            folders: dict[str, Path]) -> None:
    from codeassist.lsp.context import Snippet, build_context
    from codeassist.lsp.prompt import prompt_for

    text = "import os\n\ndef main():\n    return helper(1)\n"
    ctx = build_context("file:///home/u/proj/pkg/main.py", "python", text, text.index("helper") + 3,
                        (Snippet(path="util.py", text="def helper(n):\n    return n", score=0.9),))
    prompt = prompt_for(ctx, 512, tokenizer=toks["qwen"])
    decoded = hf_decode(folders["qwen"], list(prompt.ids))
    assert decoded.startswith("<|repo_name|>pkg\n<|file_sep|>util.py\ndef helper(n):\n    return n\n"
                              "<|file_sep|>main.py\n<|fim_prefix|>import os\n")
