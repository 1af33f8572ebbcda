"""--precision auto: obeys fp32/bf16, measures once per CPU and shape, keeps the answer, takes bf16 only
when it is clearly faster; the probe itself runs at a small shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from codeassist.training.precision import MIN_SPEEDUP, ProbeShape, probe_speedup, use_bf16

CPU = torch.device("cpu")
SHAPE = ProbeShape(n_embd=64, vocab_size=512, rows=64)


def counting(result: float) -> tuple[list[ProbeShape], object]:
    calls: list[ProbeShape] = []

    def probe(shape: ProbeShape) -> float:
        calls.append(shape)
        return result

    return calls, probe


def test_explicit_choices_are_obeyed_without_probing(tmp_path: Path) -> None:
    calls, probe = counting(5.0)
    assert use_bf16("bf16", CPU, SHAPE, probe, tmp_path / "p.json") is True  # type: ignore[arg-type]
    assert use_bf16("fp32", CPU, SHAPE, probe, tmp_path / "p.json") is False  # type: ignore[arg-type]
    assert calls == []
    with pytest.raises(ValueError, match="unknown precision"):
        use_bf16("fp16", CPU, SHAPE, probe, tmp_path / "p.json")  # type: ignore[arg-type]


@pytest.mark.parametrize(("speedup", "expected"), [(1.45, True), (MIN_SPEEDUP, True), (1.05, False), (0.54, False)])
def test_auto_follows_the_measurement(tmp_path: Path, speedup: float, expected: bool) -> None:
    calls, probe = counting(speedup)
    assert use_bf16("auto", CPU, SHAPE, probe, tmp_path / "p.json") is expected  # type: ignore[arg-type]
    assert calls == [SHAPE]


def test_the_answer_is_kept_per_shape(tmp_path: Path) -> None:
    cache = tmp_path / "p.json"
    calls, probe = counting(1.5)
    assert use_bf16("auto", CPU, SHAPE, probe, cache)  # type: ignore[arg-type]
    assert use_bf16("auto", CPU, SHAPE, probe, cache)  # type: ignore[arg-type]
    assert len(calls) == 1  # measured once
    other = ProbeShape(n_embd=128, vocab_size=512, rows=64)
    use_bf16("auto", CPU, other, probe, cache)  # type: ignore[arg-type]
    assert len(calls) == 2
    saved = json.loads(cache.read_text())
    assert len(saved) == 2 and all(v == 1.5 for v in saved.values())
    cache.write_text("{not json")  # a damaged cache is measured again, not an error
    assert use_bf16("auto", CPU, SHAPE, probe, cache)  # type: ignore[arg-type]
    assert len(calls) == 3


def test_the_probe_measures_both_precisions() -> None:
    ratio = probe_speedup(SHAPE, repeats=1)
    assert 0.01 < ratio < 100  # a real, finite ratio of two timings
