"""One tokenizer interface for the engine, token healing, prompt building, the copy index and training.

Two implementations: `CodeassistTokenizer` (ours, tiktoken: model/tokenizer.py) and `HFTokenizer`
(a Hugging Face tokenizer.json through the `tokenizers` library, for the open model families).
An engine carries its model's tokenizer (`engine.tokenizer`); nothing else assumes GPT-2 ids.

Three rules hold for both, so healing and the copy index work on bytes alone:
- `encode` is plain text: a special-token string typed in a document stays text, and nothing is
  added (no BOS: prompts add it through `lead_ids` / `fim_ids`);
- the `token_bytes` of `encode(text)` concatenate to exactly `text.encode("utf-8")` (for
  SentencePiece vocabularies the dummy leading "▁" is switched off for this);
- special ids (end of text, FIM markers, control tokens, ids past the vocabulary) have no bytes.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from codeassist.model import tokenizer as ours
from codeassist.model.errors import UserFacingError
from codeassist.model.fim_templates import TEMPLATES, FimTemplate, detect, get_template

log = logging.getLogger(__name__)

HF_NAME = "hf"  # the metadata name of a tokenizer.json tokenizer


class TokenizerFileError(UserFacingError, ValueError):
    """A tokenizer folder or model file's tokenizer cannot be used; str() is one sentence."""


class Tokenizer(ABC):
    name: str  # recorded in model files ("gpt2-ws24-fim" for ours, "hf" for tokenizer.json ones)
    n_vocab: int  # ids below this are real tokens; an embedding may have more rows (padding)
    eot_id: int  # end of text: appended to training documents, ends a completion
    bos_id: int | None  # prepended to every prompt when the model wants it (DeepSeek, Llama)
    stop_ids: frozenset[int]  # every id that ends a completion (eot, eos, the template's stops)
    template: FimTemplate | None  # its FIM markers (fim_templates.TEMPLATES); None: no FIM, prefix only

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Plain text to ids; special-token strings inside `text` are ordinary text. No BOS."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Ids to text; special and out-of-range ids are dropped."""

    @abstractmethod
    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (b"" for a special token)."""

    @abstractmethod
    def is_special(self, token_id: int) -> bool:
        """True for ids that are not text (end of text, FIM markers, padding)."""

    @abstractmethod
    def special_id(self, text: str) -> int:
        """The id of a special token by its string; KeyError when the tokenizer has none."""

    @abstractmethod
    def special_ids(self) -> frozenset[int]:
        """Every special id below n_vocab (ids from n_vocab up are special too)."""

    @abstractmethod
    def to_metadata(self) -> dict[str, str]:
        """What a model file stores so that `tokenizer_from_metadata` rebuilds this tokenizer."""

    @property
    def fim(self) -> bool:
        """Whether prompts can be fill-in-the-middle (the model has a known template)."""
        return self.template is not None

    def lead_ids(self) -> list[int]:
        """What a left-to-right prompt starts with: BOS when the model wants one, else end of text
        (documents were separated by it in training, so it marks the start of a file)."""
        return [self.bos_id] if self.bos_id is not None else [self.eot_id]

    @property
    def repo_layout(self) -> bool:
        """Whether the model was trained on a repository layout (Qwen2.5-Coder's <|repo_name|> and
        <|file_sep|>): other files then go before the FIM prompt in it (`repo_ids`), not as comments."""
        t = self.template
        return t is not None and bool(t.repo_name and t.file_sep)

    def repo_ids(self, repo: str, files: Sequence[tuple[str, str]], path: str) -> list[int]:
        """The repository layout's ids: `<|repo_name|>repo\n`, `<|file_sep|>path\ntext\n` for each
        of `files`, then the header of the file being completed (`<|file_sep|>path\n`); the
        markers as their special ids, the rest as text. [] without a layout."""
        if not self.repo_layout:
            return []
        head, tail = self.repo_frame(repo, path)
        return [*head, *(i for name, text in files for i in self.repo_file_ids(name, text)), *tail]

    def repo_frame(self, repo: str, path: str) -> tuple[list[int], list[int]]:
        """The layout's ids before the files (`<|repo_name|>repo\n`) and after them (the header of
        the file being completed). Segments meet at special ids, so they concatenate exactly."""
        t = self.template
        assert t is not None and t.repo_name and t.file_sep
        return ([self.special_id(t.repo_name), *self.encode(f"{repo}\n")],
                [self.special_id(t.file_sep), *self.encode(f"{path}\n")])

    def repo_file_ids(self, path: str, text: str) -> list[int]:
        """One file of the layout: `<|file_sep|>path\ntext\n`."""
        t = self.template
        assert t is not None and t.file_sep
        return [self.special_id(t.file_sep), *self.encode(f"{path}\n{text}\n")]

    def fim_ids(self, prefix: Sequence[int], suffix: Sequence[int], middle: Sequence[int] = (),
                spm: bool | None = None, preamble: Sequence[int] = ()) -> list[int]:
        """The FIM prompt in the template's layout (BOS first when the model wants it).

        `spm` overrides the template's order (training uses both orders for our model). The
        text around the markers of some layouts (Code Llama's spaces) is encoded in place.
        `preamble` (the repository layout, `repo_ids`) goes before the template's first marker."""
        t = self.template
        if t is None:
            raise ValueError("this model has no fill-in-the-middle template; build a left-to-right prompt")
        p, s, m = self.special_id(t.prefix), self.special_id(t.suffix), self.special_id(t.middle)
        head = [*([self.bos_id] if self.bos_id is not None else []), *preamble]
        # a space before a marker that is stored with its space ("▁<SUF>", Code Llama's) is in the marker
        pp = self.encode(t.prefix_pad) if t.prefix_pad else []
        sp = self.encode(t.suffix_pad) if t.suffix_pad and not self._spaced(t.suffix) else []
        mp = self.encode(t.middle_pad) if t.middle_pad and not self._spaced(t.middle) else []
        if t.spm if spm is None else spm:
            ids = [*head, s, *suffix, p, *pp, *prefix, *mp, m]
        else:
            ids = [*head, p, *pp, *prefix, *sp, s, *suffix, *mp, m]
        ids.extend(middle)
        return ids

    def stop_strings(self) -> tuple[str, ...]:
        """The template's stop strings that are not single tokens of this vocabulary (stop as text)."""
        return ()

    def _spaced(self, marker: str) -> bool:
        """The vocabulary has `marker` only with SentencePiece's space before it ("▁<MID>")."""
        return False


class CodeassistTokenizer(Tokenizer):
    """Ours: GPT-2 BPE + whitespace runs + FIM specials (model/tokenizer.py), template `codeassist`."""

    def __init__(self) -> None:
        self.name = ours.TOKENIZER_NAME
        self.n_vocab = ours.FIM_SUFFIX_ID + 1
        self.eot_id = ours.EOT_ID
        self.bos_id = None
        self.template = get_template("codeassist")
        self._specials = frozenset({ours.EOT_ID, ours.FIM_PREFIX_ID, ours.FIM_MIDDLE_ID, ours.FIM_SUFFIX_ID})
        # a FIM marker in the output means the model has finished the middle, as end of text does
        self.stop_ids = self._specials

    def encode(self, text: str) -> list[int]:
        return ours.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return ours.decode(ids)

    def token_bytes(self, token_id: int) -> bytes:
        if token_id in self._specials or not 0 <= token_id < self.n_vocab:
            return b""
        return ours.token_bytes(token_id)

    def is_special(self, token_id: int) -> bool:
        return ours.is_special(token_id)

    def special_id(self, text: str) -> int:
        return {ours.EOT: ours.EOT_ID, ours.FIM_PREFIX: ours.FIM_PREFIX_ID, ours.FIM_MIDDLE: ours.FIM_MIDDLE_ID,
                ours.FIM_SUFFIX: ours.FIM_SUFFIX_ID}[text]

    def special_ids(self) -> frozenset[int]:
        return self._specials

    def to_metadata(self) -> dict[str, str]:
        return {"tokenizer": self.name}

    def fim_ids(self, prefix: Sequence[int], suffix: Sequence[int], middle: Sequence[int] = (),
                spm: bool | None = None, preamble: Sequence[int] = ()) -> list[int]:
        return [*preamble, *ours.build_fim_ids(prefix, suffix, middle, spm=True if spm is None else spm)]


@functools.cache
def codeassist_tokenizer() -> CodeassistTokenizer:
    """The one instance of ours (its healing and copy caches are kept per instance)."""
    return CodeassistTokenizer()


def resolve(tokenizer: Tokenizer | None) -> Tokenizer:
    """`tokenizer`, or ours when None (every caller that predates model families)."""
    return codeassist_tokenizer() if tokenizer is None else tokenizer


# -- Hugging Face tokenizer.json -------------------------------------------------------------------

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


def tokenizer_from_metadata(meta: Mapping[str, str]) -> Tokenizer:
    """The tokenizer a model file's metadata names (key `tokenizer`; absent means ours)."""
    name = meta.get("tokenizer", ours.TOKENIZER_NAME)
    if name == ours.TOKENIZER_NAME:
        return codeassist_tokenizer()
    if name == HF_NAME:
        if "tokenizer_json" not in meta:
            raise TokenizerFileError("the model file names a Hugging Face tokenizer but does not carry its "
                                     "tokenizer.json (metadata key tokenizer_json)")
        try:
            extra = json.loads(meta.get("tokenizer_meta") or "{}")
        except ValueError:
            raise TokenizerFileError("the model file's tokenizer_meta is not JSON") from None
        return HFTokenizer(meta["tokenizer_json"], extra if isinstance(extra, dict) else {})
    raise TokenizerFileError(f"the model file uses tokenizer {name!r}; this codeassist knows "
                             f"{ours.TOKENIZER_NAME!r} and {HF_NAME!r}")
