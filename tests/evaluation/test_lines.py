"""The gate's line cases: the same for the same input, each cut inside one line."""

from __future__ import annotations

from codeassist.evaluation.lines import HeldOutFile, line_samples
from codeassist.training.collect import SourceFile

from .conftest import VAL


def test_line_samples_are_deterministic_and_cut_inside_one_line() -> None:
    a = line_samples(VAL, 6, seed=1)
    assert a == line_samples(VAL, 6, seed=1) and len(a) == 6
    assert a != line_samples(VAL, 6, seed=2)
    for s in a:
        original = next(f.text for f in VAL if f.path == s.path)
        assert s.document[:s.offset] + s.expected + s.document[s.offset:] == original
        assert "\n" not in s.expected and len(s.expected.strip()) >= 4
        assert s.document[s.offset:s.offset + 1] in ("\n", "")  # the rest of the line is gone


def test_training_source_files_give_the_same_cases() -> None:
    files = [SourceFile(path=f.path, language=f.language, text=f.text) for f in VAL]
    assert line_samples(files, 6, seed=1) == line_samples(VAL, 6, seed=1)


def test_comment_and_short_lines_are_never_cut() -> None:
    text = "# a comment that is long enough\nx = 1\n    // another comment line\nvalue = compute(items)\n"
    cases = line_samples([HeldOutFile("a.py", "python", text)], 10)
    assert len(cases) == 1  # the one code line of 8+ characters
    assert "value = compute(items)".endswith(cases[0].expected) and cases[0].document.startswith(text[:36])
