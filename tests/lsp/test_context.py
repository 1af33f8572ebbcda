import time

import pytest

from codeassist.lsp.context import (
    PREFIX_CHARS,
    QUANTUM,
    SUFFIX_CHARS,
    Mode,
    build_context,
    completion_mode,
    cursor_offset,
    detect_indent,
    index_to_units,
)

TEXT = "a = 1\ns = '😀漢字' + x\nend"


@pytest.mark.parametrize(("encoding", "units"), [("utf-16", 9), ("utf-8", 15), ("utf-32", 8)])
def test_position_encodings_with_emoji_and_cjk(encoding: str, units: int) -> None:
    # the cursor just before "' + x": after the emoji (2 utf-16 units, 4 utf-8 bytes) and two CJK (3 bytes each)
    offset, line = cursor_offset(TEXT, 1, units, encoding)
    assert TEXT[offset:offset + 5] == "' + x"
    assert line == 1
    assert index_to_units("s = '😀漢字' + x", 8, encoding) == units


def test_a_position_inside_a_surrogate_pair_is_clamped_to_the_character_start() -> None:
    offset, _ = cursor_offset(TEXT, 1, 6, "utf-16")  # between the emoji's two utf-16 units
    assert TEXT[offset] == "😀"


def test_out_of_range_positions_are_clamped() -> None:
    assert cursor_offset(TEXT, 99, 0) == (len(TEXT), 2)
    assert cursor_offset(TEXT, 0, 999)[0] == 5
    assert cursor_offset(TEXT, -3, -1)[0] == 0
    assert cursor_offset("x\r\ny", 0, 99)[0] == 1  # never inside a CRLF


def test_window_is_bounded_for_huge_documents() -> None:
    one_line = "x" * 1_000_000
    ctx = build_context("u", "python", one_line, 600_000)
    assert len(ctx.prefix) <= PREFIX_CHARS + QUANTUM
    assert len(ctx.suffix) <= SUFFIX_CHARS
    many = "def f(x):\n    return x\n" * 2_000_000  # 46 MB
    ctx = build_context("u", "python", many, len(many) // 2)
    assert len(ctx.prefix) <= PREFIX_CHARS + QUANTUM and many[ctx.prefix_offset - 1] == "\n"


def test_window_edge_does_not_move_while_typing() -> None:
    text = "value = compute(1)\n" * 2000
    offset = 20_000
    a = build_context("u", "python", text, offset)
    typed = text[:offset] + "abc" + text[offset:]
    b = build_context("u", "python", typed, offset + 3)
    assert a.prefix_offset == b.prefix_offset
    assert b.prefix == a.prefix + "abc"


def test_mode() -> None:
    def mode(before: str, after: str = "\n", multiline: str = "auto") -> Mode:
        return completion_mode(build_context("u", "python", before + after, len(before)), multiline)

    assert mode("x = fo", "o()\n") is Mode.NONE
    assert mode("def f(x):\n    ") is Mode.BLOCK
    assert mode("def f(x):") is Mode.BLOCK
    assert mode("x = f(") is Mode.BLOCK
    assert mode("x = ") is Mode.LINE
    assert mode("print(", ")\n") is Mode.LINE
    assert mode("def f(x):\n    ", multiline="never") is Mode.LINE


def test_detect_indent() -> None:
    assert detect_indent("if x:\n\ty\n\tz\n") == "\t"
    assert detect_indent("if x:\n  y\n    z\n") == "  "
    assert detect_indent("if x:\n    y\n") == "    "


def test_context_costs_the_same_for_a_50_mb_file() -> None:
    small = "x = 1\n" * 100
    big = "x = 1\n" * 9_000_000
    t0 = time.perf_counter()
    build_context("u", "python", small, len(small) - 3)
    t_small = time.perf_counter() - t0
    t0 = time.perf_counter()
    ctx = build_context("u", "python", big, len(big) - 3)
    t_big = time.perf_counter() - t0
    assert len(ctx.prefix) <= PREFIX_CHARS + QUANTUM
    # no wall-clock assertion: the size bound above is the property; the times are for the log
    print(f"small {t_small * 1e3:.2f} ms, 54 MB {t_big * 1e3:.2f} ms")
