"""One tokenizer interface for the engine, token healing, prompt building, the copy index and training.

Two implementations: `CodeassistTokenizer` (ours, tiktoken: model/tokenizer.py) and `HFTokenizer`
(a Hugging Face tokenizer.json through the `tokenizers` library, for the open model families).
An engine carries its model's tokenizer (`engine.tokenizer`); nothing else assumes GPT-2 ids.

CONTRACT (issue 15; the implementation is being written): the names and signatures below are
what model/, lsp/, remote/ and training/ code against.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from codeassist.model.fim_templates import FimTemplate


class Tokenizer(ABC):
    name: str  # recorded in model files ("gpt2-ws24-fim" for ours, "hf" for tokenizer.json ones)
    n_vocab: int  # ids below this are real tokens; an embedding may have more rows (padding)
    eot_id: int  # end of text: appended to training documents, ends a completion
    bos_id: int | None  # prepended to every prompt when the model wants it (DeepSeek, Llama)
    stop_ids: frozenset[int]  # every id that ends a completion (eot, eos, the template's stops)
    template: FimTemplate  # its FIM markers (fim_templates.TEMPLATES)

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

    def fim_ids(self, prefix: Sequence[int], suffix: Sequence[int], middle: Sequence[int] = (),
                spm: bool | None = None) -> list[int]:
        """The FIM prompt in the template's layout (BOS first when the model wants it).

        `spm` overrides the template's order (training uses both orders for our model)."""
        t = self.template
        p, s, m = self.special_id(t.prefix), self.special_id(t.suffix), self.special_id(t.middle)
        head = [self.bos_id] if self.bos_id is not None else []
        if t.spm if spm is None else spm:
            ids = [*head, s, *suffix, p, *prefix, m]
        else:
            ids = [*head, p, *prefix, s, *suffix, m]
        ids.extend(middle)
        return ids
