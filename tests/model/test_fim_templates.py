"""The FIM template table: each family's raw prompt byte for byte as its model card writes it,
recognised from a tokenizer's special tokens or a served model's name."""

import pytest

from codeassist.model.fim_templates import TEMPLATE_NAMES, TEMPLATES, detect, for_model_name, get_template

PREFIX = "def area(r):\n    return "
SUFFIX = "\n\nprint(area(2))\n"

# As the model cards write them (Code Llama's as llama.cpp sends it).
CARDS = {
    "qwen": "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",  # Qwen2.5-Coder
    "deepseek": "<｜fim▁begin｜>{prefix}<｜fim▁hole｜>{suffix}<｜fim▁end｜>",  # DeepSeek-Coder
    "starcoder": "<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>",  # StarCoder
    "santacoder": "<fim-prefix>{prefix}<fim-suffix>{suffix}<fim-middle>",  # SantaCoder
    "codellama": "<PRE> {prefix} <SUF>{suffix} <MID>",  # Code Llama
    "codeassist": "<|fim_suffix|>{suffix}<|fim_prefix|>{prefix}<|fim_middle|>",  # ours: suffix first
}


@pytest.mark.parametrize("name", sorted(CARDS))
def test_each_template_builds_its_model_cards_prompt_byte_for_byte(name: str) -> None:
    want = CARDS[name].format(prefix=PREFIX, suffix=SUFFIX)
    assert TEMPLATES[name].build(PREFIX, SUFFIX).encode("utf-8") == want.encode("utf-8")
    assert set(CARDS) == set(TEMPLATES)  # a new family comes with its card's text


def test_deepseek_markers_are_the_fullwidth_bar_and_the_lower_block() -> None:
    # a look-alike ASCII '|' or '_' would tokenize as plain text on the model's side
    t = TEMPLATES["deepseek"]
    assert (t.prefix, t.suffix, t.middle) == ("<\uff5cfim\u2581begin\uff5c>", "<\uff5cfim\u2581hole\uff5c>",
                                              "<\uff5cfim\u2581end\uff5c>")


@pytest.mark.parametrize(("tokens", "want"), [
    ({"<|endoftext|>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|file_sep|>"}, "qwen"),
    ({"<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", "<|EOT|>"}, "deepseek"),
    ({"<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>"}, "starcoder"),
    ({"<fim-prefix>", "<fim-suffix>", "<fim-middle>", "<fim-pad>"}, "santacoder"),
    ({"▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"}, "codellama"),
    ({"<|endoftext|>"}, None),
    ({"<|fim_prefix|>", "<|fim_suffix|>"}, None),  # a template needs all three markers
])
def test_detect_from_special_tokens(tokens: set[str], want: str | None) -> None:
    got = detect(tokens)
    assert (got.name if got else None) == want


@pytest.mark.parametrize(("model", "want"), [
    ("Qwen/Qwen2.5-Coder-1.5B", "qwen"), ("qwen2.5-coder:1.5b-base", "qwen"),
    ("deepseek-ai/deepseek-coder-1.3b-base", "deepseek"), ("bigcode/starcoder2-3b", "starcoder"),
    ("bigcode/santacoder", "santacoder"), ("codellama/CodeLlama-7b-hf", "codellama"),
    ("codellama:7b-code", "codellama"), ("my-model", None), ("", None),
])
def test_for_model_name(model: str, want: str | None) -> None:
    got = for_model_name(model)
    assert (got.name if got else None) == want


def test_qwen_repository_layout() -> None:
    t = TEMPLATES["qwen"]
    assert t.repo_context("lib", [("a.py", "x = 1"), ("b.py", "y = 2")]) == (
        "<|repo_name|>lib\n<|file_sep|>a.py\nx = 1\n<|file_sep|>b.py\ny = 2\n")
    assert t.current_file("c.py") == "<|file_sep|>c.py\n"
    assert TEMPLATES["starcoder"].repo_context("lib", [("a.py", "x")]) == "" and t.repo_context("lib", []) == ""


def test_names_and_unknown_names() -> None:
    assert TEMPLATE_NAMES[0] == "auto" and TEMPLATE_NAMES[-1] == "none"
    assert set(TEMPLATE_NAMES[1:-1]) == set(TEMPLATES)
    with pytest.raises(ValueError, match="unknown FIM template 'llama'"):
        get_template("llama")
    # every family's stops include the markers that begin another FIM prompt or an end token
    for t in TEMPLATES.values():
        assert t.stops and all(s for s in t.stops)


@pytest.mark.parametrize(("prefix", "suffix"), [(PREFIX, SUFFIX), ("  café 🐍 = ", "\tx\n    \n\n\n")])
def test_our_template_sent_raw_is_what_our_model_sees_in_process(prefix: str, suffix: str) -> None:
    """Our model exported for vLLM (`codeassist export --format hf`) and asked with remote.template
    codeassist: the raw text, tokenized by the exported tokenizer.json as vLLM does, is the very id
    sequence the engine builds in-process (before healing). (Not for text that spells a marker,
    such as a literal "<|endoftext|>": a server parses it as the token, our engine as text.)"""
    from codeassist.model.completion import build_prompt
    from codeassist.model.tokenization import codeassist_tokenizer
    from codeassist.model.tokenizer_export import build_hf_tokenizer

    raw = TEMPLATES["codeassist"].build(prefix, suffix)
    ours = build_prompt(prefix, suffix, 4096, heal=False, tokenizer=codeassist_tokenizer())
    assert build_hf_tokenizer().encode(raw, add_special_tokens=False).ids == list(ours.ids)
