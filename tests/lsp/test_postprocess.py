import pytest

from codeassist.lsp.context import Mode, build_context, completion_mode
from codeassist.lsp.postprocess import postprocess

CURSOR = "█"


def run(marked: str, suggestion: str, mode: Mode | None = None) -> tuple[str, str | None]:
    i = marked.index(CURSOR)
    text = marked.replace(CURSOR, "")
    ctx = build_context("file:///a.py", "python", text, i)
    return postprocess(suggestion, ctx, mode or completion_mode(ctx))


def test_line_mode_keeps_the_first_line() -> None:
    assert run("x = █\n", "compute(1)\ny = 2\n")[0] == "compute(1)"


def test_block_stops_at_dedent_below_the_block() -> None:
    got, _ = run("def f(x):\n    █\n", "y = x + 1\n    return y\nprint(f(2))\n")
    assert got == "y = x + 1\n    return y"


def test_block_opened_by_the_suggestion_ends_with_it() -> None:
    got, _ = run("def f(x):\n    █\n", "if x:\n        return 1\n    return 2\n", Mode.BLOCK)
    assert got == "if x:\n        return 1"
    got, _ = run("def f(x):\n    █\n", "if x:\n        return 1\n    else:\n        return 2\n", Mode.BLOCK)
    assert got.endswith("else:\n        return 2")


def test_blank_line_after_a_finished_block_stops() -> None:
    got, _ = run("class A:\n    █\n", "x = 1\n    y = 2\n\ndef g():\n    pass\n", Mode.BLOCK)
    assert got == "x = 1\n    y = 2"


def test_unmatched_closer_already_in_the_document_is_cut() -> None:
    assert run("print(compute(█))\n", "1, 2))")[0] == "1, 2"


def test_unmatched_closer_ends_the_suggestion_at_its_line() -> None:
    got, _ = run("items = [\n    █\n", "1,\n    2,\n]\nprint(items)\n", Mode.BLOCK)
    assert got == "1,\n    2,\n]"


def test_rest_of_line_already_present_is_trimmed() -> None:
    assert run("print(█)\n", "value)")[0] == "value"
    assert run("if x == █:\n", "1:")[0] == "1"


def test_repeat_of_the_next_line_is_dropped() -> None:
    got, dropped = run("def f(x):\n    █\n    return x\n", "return x")
    assert got == "" and dropped == "drop_suffix_duplicate"


def test_repetition_is_trimmed() -> None:
    # a line three times in a row: cut to two; a short pattern five times: cut to two of it
    assert run("def f():\n    █\n", "x = 1\n    x = 1\n    x = 1\n    x = 1\n", Mode.BLOCK) == (
        "x = 1\n    x = 1", None)
    assert run("s = █\n", "'ab' + 'ab' + 'ab' + 'ab' + 'ab' + 'ab' + 'ab'") == ("'ab' + 'ab' +", None)


def test_reindent_to_tabs_when_the_document_uses_tabs() -> None:
    got, _ = run("def f(x):\n\tif x:\n\t\ty = 1\n\t█\n", "for i in x:\n        print(i)", Mode.BLOCK)
    assert got == "for i in x:\n\t\tprint(i)"


@pytest.mark.parametrize("text", ["", "   ", "\n\n", "\t\n "])
def test_whitespace_only_is_dropped(text: str) -> None:
    got, dropped = run("x = █\n", text)
    assert got == "" and dropped is not None


def test_a_raising_filter_is_skipped() -> None:
    from codeassist.lsp.postprocess import FILTERS

    def boom(text: str, pc: object) -> str:
        raise ValueError("bug")

    ctx = build_context("u", "python", "x = \n", 4)
    assert postprocess("1", ctx, Mode.LINE, (("boom", boom), *FILTERS)) == ("1", None)
