"""The run's metrics as JSONL beside its loss chart, drawn with matplotlib when it is installed."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from codeassist.training.plot import save_loss_curve

LOSSES = [4.0, 3.5, math.nan, 3.0, 2.8, 2.7]
VAL = [(3, 3.2), (6, 2.9)]


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_and_chart(tmp_path: Path) -> None:
    from matplotlib.image import imread

    png = tmp_path / "run" / "loss.png"
    assert save_loss_curve(png, LOSSES, VAL) is None
    assert read_jsonl(png.with_suffix(".jsonl")) == [
        {"step": 1, "loss": 4.0}, {"step": 2, "loss": 3.5}, {"step": 3, "loss": None, "val_loss": 3.2},
        {"step": 4, "loss": 3.0}, {"step": 5, "loss": 2.8}, {"step": 6, "loss": 2.7, "val_loss": 2.9}]
    image = imread(png)  # a real PNG of the requested size, with the curve and the held-out points drawn
    assert image.shape[:2] == (400, 720)
    r, g, b = image[..., 0], image[..., 1], image[..., 2]
    assert ((b > 0.6) & (r < 0.2) & (g < 0.4)).sum() > 50  # the smoothed training loss (dark blue)
    assert ((r > 0.7) & (g < 0.2) & (b < 0.2)).sum() > 20  # the held-out squares (red)


def test_without_matplotlib_the_metrics_are_written_and_the_reason_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    png = tmp_path / "loss.png"
    png.write_bytes(b"an older run's chart")
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed: importing it fails
    reason = save_loss_curve(png, LOSSES, VAL)
    assert reason is not None and "matplotlib is not installed" in reason and "\n" not in reason
    assert reason.count(". ") == 0 and str(png.with_suffix(".jsonl")) in reason  # one sentence, says where
    assert not png.exists()
    assert len(read_jsonl(png.with_suffix(".jsonl"))) == len(LOSSES)
