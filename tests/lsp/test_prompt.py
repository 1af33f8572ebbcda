import pytest

from codeassist.lsp.context import Snippet, build_context
from codeassist.lsp.prompt import prompt_for
from codeassist.model import tokenizer as tok

CURSOR = "█"


def ctx_at(marked: str, language: str = "python", snippets: tuple[Snippet, ...] = ()):  # type: ignore[no-untyped-def]
    i = marked.index(CURSOR)
    text = marked.replace(CURSOR, "")
    return build_context("file:///a.py", language, text, i, snippets)


@pytest.mark.parametrize(("marked", "forced"), [
    ("def f(x):\n    █\n    return x\n", "    "),  # after indentation
    ("def f(x):\n    if x:\n        raise █\n", " "),  # after `raise `
    ("def f(values):\n    return len(val█)\n", "val"),  # mid-identifier
    ("def f(values):\n    return val█\n", " val"),
    # mid-word: back off to the word's first token (" ret" + "ur" -> the model may pick " return")
    ("def f(x):\n    if x:\n        retur█\n", " retur"),
    ("def f(x):\n    return x.raise_app_exceptio█\n", "app_exceptio"),  # at most MAX_HEAL_TOKENS
    ("print(é█)\n", "é"),  # a character of two bytes is never split
])
def test_token_healing_backs_off_to_a_whole_token(marked: str, forced: str) -> None:
    ctx = ctx_at(marked)
    p = prompt_for(ctx, 512)
    assert p.forced == forced
    # the prompt's prefix plus the forced text is exactly the text before the cursor
    pre = p.ids.index(tok.FIM_PREFIX_ID) if p.fim else 0
    body = tok.decode([t for t in p.ids[pre + 1:] if not tok.is_special(t)])
    assert body + p.forced == ctx.prefix


def test_fim_layout_is_spm_as_trained() -> None:
    p = prompt_for(ctx_at("a = 1\nb = █\nc = 3\n"), 512)
    assert p.fim
    assert p.ids[0] == tok.FIM_SUFFIX_ID and p.ids[-1] == tok.FIM_MIDDLE_ID
    s = p.ids.index(tok.FIM_PREFIX_ID)
    assert tok.decode(list(p.ids[1:s])) == "\nc = 3\n"


def test_end_of_file_is_left_to_right_after_endoftext() -> None:
    p = prompt_for(ctx_at("import os\nx = █"), 512)
    assert not p.fim and p.ids[0] == tok.EOT_ID


def test_budget_is_respected() -> None:
    text = "".join(f"value_{i} = compute({i}, 'text')\n" for i in range(400))
    for budget in (64, 300, 896):
        p = prompt_for(ctx_at(text[:5000] + "█" + text[5000:]), budget)
        assert len(p.ids) <= budget


def test_typing_keeps_the_prompt_start_stable_for_the_kv_cache() -> None:
    text = "".join(f"value_{i} = compute({i}, 'text')\n" for i in range(400))
    cut = 9000
    a = prompt_for(ctx_at(text[:cut] + "█" + text[cut:]), 600).ids
    b = prompt_for(ctx_at(text[:cut] + "result = comp█" + text[cut:]), 600).ids
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    assert len(b) - common <= 6  # only the typed tokens (and the healed one) are new


def test_snippets_from_other_files_go_first_as_comments() -> None:
    snip = Snippet("util.py", "def parse_header(line):\n    return line.split(':')", 0.5)
    p = prompt_for(ctx_at("x = parse_header(█)\n", snippets=(snip,)), 512)
    text = tok.decode(list(p.ids))
    assert "# Compare this snippet from util.py:\n# def parse_header(line):" in text
    assert text.index("util.py") < text.index("x = parse_header")
