"""Resume after a real SIGKILL is bitwise equal to the run that was never interrupted.

A worker process trains a small model with dropout (so the saved random state matters) and is
killed with SIGKILL at three points: after a step's update but before its checkpoint (the step
is redone), with a training checkpoint written to its temporary file but not renamed, and between
the training checkpoint and the model file. A fourth life trains to the end. Its weights,
optimizer moments, random state and loss history equal, bit for bit, those of one life that was
never killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from .sigkill_worker import train_run

WORKER = Path(__file__).with_name("sigkill_worker.py")


def life(out: Path, point: str = "") -> list[str]:
    """One run of the worker: killed with SIGKILL where it pauses at `point`, else to the end."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(WORKER), str(out), *([point] if point else [])],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdin is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith("paused"):
            proc.send_signal(signal.SIGKILL)
            break
    assert proc.wait(timeout=120) == (-signal.SIGKILL if point else 0), lines
    proc.stdout.close()
    proc.stdin.close()
    if point:
        assert lines[-1] == f"paused {point}"
    return lines


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}  # noqa: SIM118


def progress(meta: dict[str, str]) -> dict[str, object]:
    state: dict[str, object] = json.loads(meta["state"])
    del state["elapsed_s"]  # wall-clock time, the one thing a resumed run may not reproduce
    return state


@pytest.mark.slow
def test_resume_after_sigkill_is_bitwise_equal_to_the_uninterrupted_run(tmp_path: Path) -> None:
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    train_run(whole)  # the reference, never interrupted (here: one thread, as in the worker)
    first = life(killed, "step:3")
    assert first[:3] == ["step 1", "step 2", "step 3"]  # nothing was resumed in the first life
    # each later life resumes from the last complete checkpoint (written every 2 steps)
    assert life(killed, "save-state:6")[0] == "step 3"  # from step 2: step 3 is done again
    assert list(killed.glob(".state.safetensors.*.tmp"))  # the kill left the unrenamed checkpoint
    assert life(killed, "save-model:8")[0] == "step 5"  # from step 4
    assert life(killed)[0] == "step 9"  # from step 8: its checkpoint was complete, the model file not
    for name in ("state.safetensors", "model.safetensors"):  # weights, optimizer moments, random state
        expected, _ = read(whole / name)
        got, _ = read(killed / name)
        assert got.keys() == expected.keys()
        different = [k for k in expected if not torch.equal(got[k], expected[k])]
        assert not different, (name, different)
    got_state, expected_state = (progress(read(d / "state.safetensors")[1]) for d in (killed, whole))
    assert got_state == expected_state  # every loss and validation loss, bit for bit
    assert got_state["step"] == 10 and len(got_state["losses"]) == 10  # type: ignore[arg-type]
