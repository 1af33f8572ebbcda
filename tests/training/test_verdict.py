"""The closing report's paired test: McNemar's exact test on the lines that changed."""

from __future__ import annotations

import pytest

from codeassist.training.verdict import closing_report, compare_hits, mcnemar_exact_p


@pytest.mark.parametrize("gained, lost, p", [
    (0, 0, 1.0),  # nothing changed
    (5, 5, 1.0),
    (10, 0, 2 / 1024),  # 2 x P(X <= 0), X ~ B(10, 1/2)
    (0, 10, 2 / 1024),  # two-sided
    (6, 1, 2 * 8 / 128),  # (C(7,0) + C(7,1)) / 2^7, doubled: 0.125
    (9, 2, 2 * 67 / 2048),  # 0.065: not below 0.05
    (10, 2, 2 * 79 / 4096),  # 0.039: below 0.05
    (3, 0, 0.25),
])
def test_mcnemar_exact_p_on_hand_made_counts(gained: int, lost: int, p: float) -> None:
    assert mcnemar_exact_p(gained, lost) == pytest.approx(p, rel=1e-12)


def test_mcnemar_rejects_negative_counts() -> None:
    with pytest.raises(ValueError):
        mcnemar_exact_p(-1, 2)


def _hits(gained: int, lost: int, both: int, neither: int) -> tuple[list[bool], list[bool]]:
    old = [False] * gained + [True] * lost + [True] * both + [False] * neither
    new = [True] * gained + [False] * lost + [True] * both + [False] * neither
    return old, new


def test_a_gain_beyond_noise_is_called_better() -> None:
    v = compare_hits(*_hits(10, 2, 5, 283))
    assert (v.lines, v.old_hits, v.new_hits, v.gained, v.lost) == (300, 7, 15, 10, 2)
    assert v.beyond_noise
    assert v.sentence == ("line exact match on 300 held-out lines of your code: 2.3% -> 5.0% (+2.7 points; "
                          "10 lines newly right, 2 newly wrong), better beyond noise (McNemar p = 0.039)")
    assert "not measurably better" not in closing_report(True, v)


def test_a_small_gain_is_within_noise_even_when_the_gate_installs_the_model() -> None:
    v = compare_hits(*_hits(9, 2, 2, 287))  # the issue's +2.3 points: p = 0.065
    assert not v.beyond_noise
    assert v.sentence.endswith("within noise for 300 lines (McNemar p = 0.07)")
    report = closing_report(True, v)
    assert report.startswith("What you get: line exact match on 300 held-out lines of your code: 1.3% -> 3.7% (+2.3")
    assert "installed the new model for its lower held-out loss" in report
    assert "not measurably better" not in closing_report(False, v)  # a refused model needs no excuse


def test_a_loss_beyond_noise_is_called_worse() -> None:
    v = compare_hits(*_hits(0, 8, 0, 92))
    assert v.beyond_noise and "worse beyond noise" in v.sentence
    assert "not measurably better" in closing_report(True, v)


def test_the_lines_must_be_the_same() -> None:
    with pytest.raises(ValueError):
        compare_hits([True], [True, False])
