"""FSDP under torchrun: two gloo processes train a tiny Qwen2 to the losses of one process, resume
from their own checkpoint, and write the same files; with LoRA adapters too.

One torchrun launch runs every FSDP case (fsdp_worker.PLAN); the single-process references run in
this process meanwhile. Two tests with five launches and two more processes took 140 s beside a
loaded make test; the process start-ups, not the training, were most of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codeassist.model.checkpoint import load_model
from codeassist.training.ddp import DistEnv

from .fsdp_worker import losses_file, run

WORKER = Path(__file__).with_name("fsdp_worker.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _one_process(out: Path, steps: int, lora: bool) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank does
    try:
        run(out, "ddp", steps, lora, DistEnv())
    finally:
        torch.set_num_threads(threads)
    return json.loads(losses_file(out, steps).read_text())


def _weights_close(a: Path, b: Path) -> None:
    ma, ia = load_model(a)
    mb, ib = load_model(b)
    assert ia.config == ib.config
    for (k, x), y in zip(ma.state_dict().items(), mb.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-4, msg=k)  # measured: at most 1.2e-5; a step is ~1e-2


@pytest.mark.slow
def test_two_fsdp_processes_match_one_process_resume_and_merge_lora(tmp_path: Path) -> None:
    two, one = tmp_path / "fsdp", tmp_path / "one"
    launch = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               str(WORKER), str(two)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        plain = _one_process(one / "plain", 6, lora=False)
        lora = _one_process(one / "lora", 4, lora=True)
        _, err = launch.communicate(timeout=420)
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.communicate()
    assert launch.returncode == 0, err[-3000:]

    # FSDP stops after step 3 (its checkpoint), then resumes from it under FSDP to step 6
    first = json.loads(losses_file(two / "plain", 3).read_text())
    assert first["trained"] == [1, 2, 3] and plain["trained"] == [1, 2, 3, 4, 5, 6]
    assert first["losses"] == pytest.approx(plain["losses"][:3], abs=1e-4)
    resumed = json.loads(losses_file(two / "plain", 6).read_text())
    assert resumed["trained"] == [4, 5, 6]  # from the checkpoint, not from the start
    assert len(resumed["losses"]) == len(plain["losses"]) == 6
    assert resumed["losses"] == pytest.approx(plain["losses"], abs=1e-4)  # only the sum order differs
    assert [s for s, _ in resumed["val"]] == [3, 6]
    assert [v for _, v in resumed["val"]] == pytest.approx([v for _, v in plain["val"]], abs=1e-4)
    assert resumed["losses"][-1] < resumed["losses"][0] - 0.5
    _weights_close(one / "plain" / "model.safetensors", two / "plain" / "model.safetensors")

    # LoRA under FSDP writes the merged model of one process
    sharded_lora = json.loads(losses_file(two / "lora", 4).read_text())
    assert sharded_lora["losses"] == pytest.approx(lora["losses"], abs=1e-4)
    _weights_close(one / "lora" / "model.safetensors", two / "lora" / "model.safetensors")
