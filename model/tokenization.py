"""One tokenizer interface for the engine, token healing, prompt building, the copy index and training.

Two implementations: `CodeassistTokenizer` (ours, tiktoken: model/tokenizer.py) and `HFTokenizer`
(a Hugging Face tokenizer.json through the `tokenizers` library, for the open model families:
model/hf_tokenizer.py).
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
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

from codeassist.model import tokenizer as ours
from codeassist.model.errors import UserFacingError
from codeassist.model.fim_templates import FimTemplate, get_template

__all__ = ["HF_NAME", "CodeassistTokenizer", "Tokenizer", "TokenizerFileError", "codeassist_tokenizer",
           "resolve", "tokenizer_from_metadata"]

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


def tokenizer_from_metadata(meta: Mapping[str, str]) -> Tokenizer:
    """The tokenizer a model file's metadata names (key `tokenizer`; absent means ours)."""
    name = meta.get("tokenizer", ours.TOKENIZER_NAME)
    if name == ours.TOKENIZER_NAME:
        return codeassist_tokenizer()
    if name == HF_NAME:
        from codeassist.model.hf_tokenizer import HFTokenizer

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
