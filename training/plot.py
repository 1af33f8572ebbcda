"""A run's loss curve: the metrics as JSONL (always) and a PNG chart beside them (with matplotlib).

matplotlib comes with the training extra (`pip install 'codeassist[train]'`) and is imported only
when drawing, so the language server never pays for it. Training loss is drawn in blue (raw,
light; smoothed, dark), held-out loss as red squares.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path


def smooth(values: Sequence[float], alpha: float = 0.1) -> list[float]:
    """Exponential moving average; a non-finite value leaves the average where it was."""
    out: list[float] = []
    for v in values:
        if not out:
            out.append(v)
        else:
            prev = out[-1] if math.isfinite(out[-1]) else v
            out.append(prev + alpha * (v - prev) if math.isfinite(v) else prev)
    return out


def metrics_rows(losses: Sequence[float], val_losses: Sequence[tuple[int, float]] = ()) -> list[dict[str, object]]:
    """One row per optimizer step (1-based): its training loss, and its held-out loss where measured.
    Non-finite losses (skipped steps) are null, which JSON can hold."""
    val = {step: v for step, v in val_losses}
    last = max(len(losses), max(val, default=0))
    rows: list[dict[str, object]] = []
    for step in range(1, last + 1):
        row: dict[str, object] = {"step": step}
        if step <= len(losses):
            row["loss"] = _finite(losses[step - 1])
        if step in val:
            row["val_loss"] = _finite(val[step])
        rows.append(row)
    return rows


def write_metrics(path: Path, losses: Sequence[float], val_losses: Sequence[tuple[int, float]] = ()) -> None:
    _write_atomic(path, "".join(json.dumps(row) + "\n" for row in metrics_rows(losses, val_losses)).encode())


def render_loss_curve(losses: Sequence[float], val_losses: Sequence[tuple[int, float]] = (),
                      width: int = 720, height: int = 400) -> bytes:
    """PNG bytes: x is the optimizer step (1-based), y the loss."""
    import io

    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_subplot()
    steps = list(range(1, len(losses) + 1))
    raw = [v if math.isfinite(v) else math.nan for v in losses]
    ax.plot(steps, raw, color="#aabef0", linewidth=1, label="training loss")
    ax.plot(steps, smooth(raw), color="#143cc8", linewidth=2, label="smoothed")
    shown = [(s, v) for s, v in val_losses if math.isfinite(v)]
    if shown:
        ax.plot([s for s, _ in shown], [v for _, v in shown], "s", color="#d21e1e", label="held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(True, color="#c8c8c8", linewidth=0.5)
    ax.legend(loc="upper right")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def save_loss_curve(path: Path, losses: Sequence[float], val_losses: Sequence[tuple[int, float]] = ()
                    ) -> str | None:
    """Write `path` with suffix .jsonl (the metrics) and, when matplotlib is installed, the PNG `path`.

    Returns None, or one sentence saying why there is no PNG."""
    metrics = path.with_suffix(".jsonl")
    write_metrics(metrics, losses, val_losses)
    if importlib.util.find_spec("matplotlib") is None:
        path.unlink(missing_ok=True)  # an older run's chart (before a resume) would mislead
        return (f"no loss chart: matplotlib is not installed (pip install 'codeassist[train]'), "
                f"so the losses are only in {metrics}")
    _write_atomic(path, render_loss_curve(losses, val_losses))
    return None


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
