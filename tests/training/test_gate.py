from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from codeassist.model.checkpoint import save_model
from codeassist.model.config import get_preset
from codeassist.model.tokenizer import encode
from codeassist.training.collect import SourceFile
from codeassist.training.gate import Score, decide, run_gate
from codeassist.training.loop import build_model

from .fixtures import code_file

VAL = [SourceFile(path=f"proj/held_{i}.py", language="python", text=code_file(20 + i)) for i in range(2)]


@pytest.mark.parametrize(("new", "old", "better"), [
    (Score(2.0, 0.30, 100), Score(2.2, 0.30, 100), True),  # 9% lower loss, same exact match
    (Score(2.19, 0.30, 100), Score(2.2, 0.30, 100), False),  # 0.5% lower loss: within noise
    (Score(2.0, 0.25, 100), Score(2.2, 0.30, 100), False),  # lower loss but fewer lines right
    (Score(2.2, 0.35, 100), Score(2.2, 0.30, 100), True),  # 5 points more exact match
    (Score(2.3, 0.40, 100), Score(2.2, 0.30, 100), False),  # more exact match but a higher loss
    (Score(math.nan, 0.4, 100), Score(2.2, 0.30, 100), False),
])
def test_decision_rule(new: Score, old: Score, better: bool) -> None:
    ok, summary = decide(new, old)
    assert ok is better
    assert "held-out" in summary and ("points" in summary or math.isnan(new.loss))


def test_gate_refuses_a_worse_model_and_accepts_a_better_one(tmp_path: Path) -> None:
    good = build_model(get_preset("tiny"), seed=0)
    worse = build_model(get_preset("tiny"), seed=0)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in worse.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    save_model(good, tmp_path / "good.safetensors")
    save_model(worse, tmp_path / "worse.safetensors")
    tokens = np.asarray(encode("".join(f.text for f in VAL)), dtype=np.uint16)
    refused = run_gate(tmp_path / "worse.safetensors", tmp_path / "good.safetensors", tokens, VAL, lines=3)
    assert not refused.better and refused.new.loss > refused.old.loss
    assert refused.new.lines == 3 and "not measurably better" in refused.summary
    accepted = run_gate(tmp_path / "good.safetensors", tmp_path / "worse.safetensors", tokens, VAL, lines=3)
    assert accepted.better and accepted.summary.startswith("the new model is better")


def test_gate_default_command_scores_on_stdlib_held_out_files(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from codeassist.training import gate_default

    good = build_model(get_preset("tiny"), seed=0)
    worse = build_model(get_preset("tiny"), seed=0)
    with torch.no_grad():
        for p in worse.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.5)
    save_model(good, tmp_path / "good.safetensors")
    save_model(worse, tmp_path / "worse.safetensors")
    data = tmp_path / "stdlib"
    data.mkdir()
    np.asarray(encode(VAL[0].text * 20), dtype=np.uint16).tofile(data / "val.bin")
    args = ["--data", str(data), "--lines", "2", "--threads", "1"]
    assert gate_default.main([str(tmp_path / "worse.safetensors"), str(tmp_path / "good.safetensors"), *args]) == 1
    assert "not measurably better" in capsys.readouterr().out
    assert gate_default.main([str(tmp_path / "good.safetensors"), str(tmp_path / "worse.safetensors"), *args]) == 0
    assert capsys.readouterr().out.startswith("the new model is better: held-out loss")
