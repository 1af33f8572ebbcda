from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codeassist.model.checkpoint import load_model
from codeassist.training.loop import build_model, make_optimizer
from codeassist.training.state import load_train_state

from .kill_worker import CFG, CONFIG

WORKER = Path(__file__).with_name("kill_worker.py")


def _start(out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(WORKER.parent), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(WORKER), str(out)], stdout=subprocess.PIPE, text=True, env=env)


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    rng = random.Random(0)
    last_step = 0
    for _ in range(3):
        proc = _start(tmp_path)
        assert proc.stdout is not None
        # step k is printed before its checkpoint is written: the second line means this life's
        # first checkpoint is complete
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert all(line.strip() for line in lines), "the worker did not train"
        time.sleep(rng.uniform(0.0, 0.4))  # most of a step is the checkpoint write: kill inside it
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        model = build_model(CONFIG, seed=0)
        state = load_train_state(tmp_path / "state.safetensors", model, make_optimizer(model, CFG), CFG, CONFIG,
                                 data_id="k")
        assert state.step > last_step  # every life resumed from the last checkpoint and moved on
        last_step = state.step
        load_model(tmp_path / "model.safetensors")
        # a kill inside a save leaves its temporary file; the next life removes it, so they never pile up
        assert len(list(tmp_path.glob(".*tmp*"))) <= 2
    assert last_step >= 3
