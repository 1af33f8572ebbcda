"""Fill-in-the-middle templates and stop strings of the code-model families, as their model cards give them.

One table, used at three levels: the token-level prompt of an in-process model
(model/tokenization.py builds ids from the same strings), the raw text prompt the remote
backend sends to an OpenAI-compatible server that knows nothing of FIM (vLLM, TGI), and the
repository-context layout of the families that were trained with one (Qwen2.5-Coder).

    codeassist  <|fim_suffix|>S<|fim_prefix|>P<|fim_middle|>          (ours, SPM: suffix first)
    qwen        <|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>          Qwen2.5-Coder
    deepseek    <｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜>            DeepSeek-Coder
    starcoder   <fim_prefix>P<fim_suffix>S<fim_middle>                StarCoder, StarCoder2, tiny_starcoder
    santacoder  <fim-prefix>P<fim-suffix>S<fim-middle>                SantaCoder (hyphens, not underscores)
    codellama   <PRE> P <SUF>S <MID>                                  Code Llama (spaces as llama.cpp sends them)

A local model's template is recognised from its tokenizer's special tokens (`detect`), since a
folder's name says nothing; a remote model's from its name (`for_model_name`), or the setting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FimTemplate:
    name: str
    prefix: str  # the marker before the text before the cursor
    suffix: str  # ... before the text after the cursor
    middle: str  # ... after which the model writes the middle
    spm: bool = False  # suffix first (ours); everyone else is prefix first (PSM)
    stops: tuple[str, ...] = ()  # strings that end a completion besides the end-of-text token
    # the text around the markers in the codellama layout: "<PRE> " + P + " <SUF>" + S + " <MID>"
    prefix_pad: str = ""
    suffix_pad: str = ""
    middle_pad: str = ""
    # repository context (Qwen2.5-Coder: "<|repo_name|>name\n<|file_sep|>path\ncontent\n...")
    repo_name: str | None = None
    file_sep: str | None = None

    def build(self, prefix: str, suffix: str) -> str:
        """The raw text prompt for a server that is sent it verbatim."""
        if self.spm:
            return f"{self.suffix}{suffix}{self.prefix}{self.prefix_pad}{prefix}{self.middle}"
        return (f"{self.prefix}{self.prefix_pad}{prefix}{self.suffix_pad}{self.suffix}{suffix}"
                f"{self.middle_pad}{self.middle}")

    def markers(self) -> tuple[str, ...]:
        """Every special string of the template, for tokenizers that must know them."""
        extra = tuple(m for m in (self.repo_name, self.file_sep) if m)
        return (self.prefix, self.suffix, self.middle, *extra)

    def repo_context(self, repo: str, files: Sequence[tuple[str, str]]) -> str:
        """Other files of the repository, in the family's trained layout, to put before the
        current file's FIM prompt; "" for families without one."""
        if not (self.repo_name and self.file_sep) or not files:
            return ""
        parts = [f"{self.repo_name}{repo}\n"]
        parts += [f"{self.file_sep}{path}\n{text}\n" for path, text in files]
        return "".join(parts)

    def current_file(self, path: str) -> str:
        """The header of the file being completed, after `repo_context` ("" without a layout)."""
        return f"{self.file_sep}{path}\n" if self.repo_name and self.file_sep else ""


TEMPLATES: dict[str, FimTemplate] = {
    t.name: t
    for t in (
        FimTemplate("codeassist", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", spm=True,
                    stops=("<|endoftext|>",)),
        FimTemplate("qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>",
                    stops=("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|fim_prefix|>",
                           "<|im_end|>"),
                    repo_name="<|repo_name|>", file_sep="<|file_sep|>"),
        FimTemplate("deepseek", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>",
                    stops=("<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>")),
        FimTemplate("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>",
                    stops=("<|endoftext|>", "<file_sep>", "<fim_prefix>")),
        FimTemplate("santacoder", "<fim-prefix>", "<fim-suffix>", "<fim-middle>",
                    stops=("<|endoftext|>", "<fim-prefix>")),
        FimTemplate("codellama", "<PRE>", "<SUF>", "<MID>", stops=("<EOT>", "</s>"),
                    prefix_pad=" ", suffix_pad=" ", middle_pad=" "),
    )
}
TEMPLATE_NAMES = ("auto", *TEMPLATES, "none")


def get_template(name: str) -> FimTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown FIM template {name!r}; known: {', '.join(TEMPLATES)}") from None


def detect(special_tokens: Iterable[str]) -> FimTemplate | None:
    """The template whose markers a tokenizer defines as tokens (None: no FIM template known)."""
    have = set(special_tokens)
    if {"<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"} <= have:
        return TEMPLATES["deepseek"]
    if {"<fim_prefix>", "<fim_suffix>", "<fim_middle>"} <= have:
        return TEMPLATES["starcoder"]
    if {"<fim-prefix>", "<fim-suffix>", "<fim-middle>"} <= have:
        return TEMPLATES["santacoder"]
    if {"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"} <= have:
        return TEMPLATES["qwen"]
    if {"▁<PRE>", "▁<SUF>", "▁<MID>"} <= have or {"<PRE>", "<SUF>", "<MID>"} <= have:
        return TEMPLATES["codellama"]
    return None


_NAME_HINTS = (
    ("qwen", "qwen"),
    ("deepseek", "deepseek"),
    ("starcoder", "starcoder"),
    ("santacoder", "santacoder"),
    ("codellama", "codellama"),
    ("code-llama", "codellama"),
    ("code_llama", "codellama"),
)


def for_model_name(model: str) -> FimTemplate | None:
    """`remote.template: auto`: the family a served model's name says (None: send no template)."""
    low = model.lower()
    for hint, name in _NAME_HINTS:
        if hint in low:
            return TEMPLATES[name]
    return None
