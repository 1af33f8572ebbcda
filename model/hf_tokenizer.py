"""Hugging Face tokenizer.json tokenizers: the open model families' (Qwen2.5-Coder, DeepSeek-Coder,
StarCoder, Code Llama).

A Hub folder carries its tokenizer as tokenizer.json (a fast tokenizer, run by the `tokenizers`
library), with its BOS and end-of-text ids in tokenizer_config.json and generation_config.json
(`HFTokenizer.from_folder`). A model file made from one stores that JSON and those ids in its
metadata (`to_metadata`), and model/tokenization.py's `tokenizer_from_metadata` rebuilds it.

`HFTokenizer` keeps the three rules stated in model/tokenization.py's docstring: every control
token is made special and special-token strings are encoded as text; SentencePiece's dummy
leading "▁" is switched off (`_no_dummy_prefix`); a token's bytes are read from the vocabulary
(GPT-2's byte table for ByteLevel vocabularies, <0x..> byte fallback and "▁" for SentencePiece
ones), and special ids have none.

This module imports model/tokenization.py at load; tokenization imports this one only when a model
file names a tokenizer.json, so the two never import each other in a cycle.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from codeassist.model.fim_templates import TEMPLATES, detect, get_template
from codeassist.model.tokenization import HF_NAME, Tokenizer, TokenizerFileError

__all__ = ["HFTokenizer", "byte_to_unicode"]

log = logging.getLogger(__name__)

# Control tokens that a vocabulary may list as added but not "special" (Qwen2.5's FIM markers,
# DeepSeek-Coder's): they are markers, never text.
_CONTROL = re.compile(r"^(<\|[^|]*\|>|<｜[^｜]*｜>|<[a-z_]+>|</s>|<s>|<unk>|<pad>|<EOT>|<PRE>|<SUF>|<MID>|▁<(PRE|SUF|MID|EOT)>)$")
_KNOWN_MARKERS = frozenset(s for t in TEMPLATES.values() for s in (*t.markers(), *t.stops))


@functools.cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (HF ByteLevel and llama.cpp use the same table)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


@functools.cache
def _byte_decoder() -> dict[str, int]:
    """The table inverted: the character a ByteLevel vocabulary writes → its byte."""
    return {c: b for b, c in byte_to_unicode().items()}


_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _components(node: Any, kind: str) -> list[dict[str, Any]]:
    """Every component of type `kind` in a (possibly Sequence) pre_tokenizer/decoder/normalizer."""
    if not isinstance(node, dict):
        return []
    if node.get("type") == kind:
        return [node]
    out: list[dict[str, Any]] = []
    for key in ("pretokenizers", "decoders", "normalizers"):
        for child in node.get(key) or []:
            out += _components(child, kind)
    return out


def _no_dummy_prefix(spec: dict[str, Any]) -> dict[str, Any]:
    """SentencePiece-style vocabularies prepend "▁" to a text; ours never adds text, so it goes
    (a prompt is encoded in pieces, and the pieces must concatenate to the text's bytes)."""
    norm = spec.get("normalizer")
    if isinstance(norm, dict):
        if norm.get("type") == "Prepend":
            spec["normalizer"] = None
        elif norm.get("type") == "Sequence":
            norm["normalizers"] = [n for n in norm.get("normalizers") or [] if n.get("type") != "Prepend"]
    for m in _components(spec.get("pre_tokenizer"), "Metaspace"):
        m["prepend_scheme"] = "never"
        m["add_prefix_space"] = False
    return spec


class HFTokenizer(Tokenizer):
    """A Hugging Face tokenizer.json (Qwen2.5-Coder, DeepSeek-Coder, StarCoder, Code Llama)."""

    def __init__(self, tokenizer_json: str, meta: Mapping[str, Any]) -> None:
        """`meta`: bos_token_id (or None), add_bos_token, eos_token_ids, template (a name or None);
        see `from_folder` for where each comes from."""
        try:
            from tokenizers import AddedToken
            from tokenizers import Tokenizer as _HF
        except ImportError as exc:  # pragma: no cover - a dependency
            raise TokenizerFileError("the 'tokenizers' package is needed for this model's tokenizer") from exc
        self.name = HF_NAME
        self._json = tokenizer_json
        self._meta = dict(meta)
        try:
            spec = json.loads(tokenizer_json)
            self._tk = _HF.from_str(json.dumps(_no_dummy_prefix(spec)))
        except Exception as exc:
            raise TokenizerFileError(f"the tokenizer.json cannot be read ({str(exc).splitlines()[0][:160]})") from None
        self._byte_level = bool(_components(spec.get("pre_tokenizer"), "ByteLevel")
                                or _components(spec.get("decoder"), "ByteLevel"))
        added = self._tk.get_added_tokens_decoder()
        self._added_text: dict[int, bytes] = {}  # added tokens that are text (DeepSeek's "õ"...)
        specials: dict[str, int] = {}
        promote = []
        for i, t in added.items():
            if t.special or t.content in _KNOWN_MARKERS or _CONTROL.match(t.content):
                specials[t.content] = i
                if not t.special:  # so that the same string in a document is encoded as text
                    promote.append(AddedToken(t.content, single_word=t.single_word, lstrip=t.lstrip,
                                              rstrip=t.rstrip, normalized=False, special=True))
            else:
                self._added_text[i] = t.content.encode("utf-8")
        if promote:
            self._tk.add_special_tokens(promote)
        self._tk.encode_special_tokens = True
        self._specials = specials
        self._special_set = frozenset(specials.values())
        vocab = self._tk.get_vocab(with_added_tokens=True)
        self.n_vocab = max(vocab.values()) + 1 if vocab else 0
        eos = [int(i) for i in self._meta.get("eos_token_ids") or []]
        if not eos:
            eos = [i for s, i in specials.items() if s in ("<|endoftext|>", "</s>", "<｜end▁of▁sentence｜>")][:1]
        if not eos:
            raise TokenizerFileError("the tokenizer has no end-of-text token (no eos_token in tokenizer_config.json "
                                     "or generation_config.json)")
        self.eot_id = eos[0]
        bos = self._meta.get("bos_token_id")
        self.bos_id = int(bos) if bos is not None and self._meta.get("add_bos_token") else None
        name = self._meta.get("template")
        self.template = get_template(name) if name else None
        stops = set(eos)
        if self.template is not None:  # Code Llama's end is "▁<EOT>"
            for s in self.template.stops:
                stop = vocab.get(s, vocab.get("▁" + s))
                if stop is not None:
                    stops.add(stop)
        self.stop_ids = frozenset(stops)
        self._special_set |= self.stop_ids  # an eos id is never text, whatever the file says

    @classmethod
    def from_folder(cls, path: str | Path) -> HFTokenizer:
        """tokenizer.json, with tokenizer_config.json (bos/eos, add_bos_token) and
        generation_config.json (eos_token_id, an int or a list) when present."""
        folder = Path(path)
        try:
            text = (folder / "tokenizer.json").read_text(encoding="utf-8")
        except FileNotFoundError:
            raise TokenizerFileError(f"{folder} has no tokenizer.json (only fast Hugging Face tokenizers "
                                     "are supported)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenizerFileError(f"{folder / 'tokenizer.json'} cannot be read ({exc})") from None
        config = _read_json(folder / "tokenizer_config.json")
        gen = _read_json(folder / "generation_config.json")
        try:
            spec = json.loads(text)
        except ValueError as exc:
            raise TokenizerFileError(f"{folder / 'tokenizer.json'} is not JSON ({str(exc)[:120]})") from None
        ids = {t["content"]: int(t["id"]) for t in spec.get("added_tokens") or [] if "content" in t}
        vocab = (spec.get("model") or {}).get("vocab")
        lookup = {**(vocab if isinstance(vocab, dict) else {}), **ids}

        def token_id(value: Any) -> int | None:
            content = value.get("content") if isinstance(value, dict) else value
            return lookup.get(content) if isinstance(content, str) else None

        eos: list[int] = []
        raw_eos = gen.get("eos_token_id")
        for v in raw_eos if isinstance(raw_eos, list) else [raw_eos]:
            if isinstance(v, int):
                eos.append(v)
        conf_eos = token_id(config.get("eos_token"))
        if conf_eos is not None and conf_eos not in eos:
            eos.append(conf_eos)  # after generation_config's: the end a base model writes comes first there
        bos = gen.get("bos_token_id") if isinstance(gen.get("bos_token_id"), int) else token_id(config.get("bos_token"))
        template = detect(ids)
        if template is None:
            log.warning("%s: no fill-in-the-middle template is known for this tokenizer's special tokens; "
                        "completions will see only the text before the cursor", folder)
        meta = {"bos_token_id": bos, "add_bos_token": bool(config.get("add_bos_token", False)),
                "eos_token_ids": eos, "template": template.name if template else None}
        return cls(text, meta)

    def encode(self, text: str) -> list[int]:
        return list(self._tk.encode(text, add_special_tokens=False).ids) if text else []

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self.token_bytes(int(i)) for i in ids).decode("utf-8", errors="replace")

    @functools.cached_property
    def _bytes(self) -> list[bytes]:
        """Every id's bytes, built once (about a second for Qwen's 151,665 tokens)."""
        table = [b""] * self.n_vocab
        bd = _byte_decoder()
        for piece, i in self._tk.get_vocab(with_added_tokens=False).items():
            if i in self._special_set:
                continue
            if self._byte_level:
                try:
                    table[i] = bytes(bd[c] for c in piece)
                except KeyError:
                    table[i] = piece.encode("utf-8")
            else:
                m = _BYTE_FALLBACK.match(piece)
                table[i] = bytes([int(m.group(1), 16)]) if m else piece.replace("▁", " ").encode("utf-8")
        for i, b in self._added_text.items():
            if i not in self._special_set:
                table[i] = b
        return table

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id] if 0 <= token_id < self.n_vocab else b""

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_set or not 0 <= token_id < self.n_vocab

    def special_id(self, text: str) -> int:
        if text not in self._specials and "▁" + text in self._specials:  # Code Llama's "▁<PRE>"
            return self._specials["▁" + text]
        return self._specials[text]

    def special_ids(self) -> frozenset[int]:
        return self._special_set

    def _spaced(self, marker: str) -> bool:
        return marker not in self._specials and "▁" + marker in self._specials

    def stop_strings(self) -> tuple[str, ...]:
        if self.template is None:
            return ()
        return tuple(s for s in self.template.stops if s not in self._specials)

    def to_metadata(self) -> dict[str, str]:
        return {"tokenizer": HF_NAME, "tokenizer_json": self._json,
                "tokenizer_meta": json.dumps(self._meta, sort_keys=True)}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TokenizerFileError(f"{path} cannot be read as JSON ({str(exc)[:120]})") from None
    return raw if isinstance(raw, dict) else {}
