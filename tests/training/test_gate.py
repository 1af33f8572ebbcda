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
from codeassist.training.gate import Score, decide, line_samples, run_gate
from codeassist.training.loop import build_model

from .fixtures import code_file

VAL = [SourceFile(path=f"proj/held_{i}.py", language="python", text=code_file(20 + i)) for i in range(2)]


def test_line_samples_are_deterministic_and_cut_inside_one_line() -> None:
    a = line_samples(VAL, 6, seed=1)
    assert a == line_samples(VAL, 6, seed=1) and len(a) == 6
    assert a != line_samples(VAL, 6, seed=2)
    for s in a:
        original = next(f.text for f in VAL if f.path == s.path)
        assert s.document[:s.offset] + s.expected + s.document[s.offset:] == original
        assert "\n" not in s.expected and len(s.expected.strip()) >= 4
        assert s.document[s.offset:s.offset + 1] in ("\n", "")  # the rest of the line is gone


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


class _EchoBackend:
    """Answers every case with the expected text, and records the time budget it was given."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.budgets: list[float | None] = []

    def status(self):  # type: ignore[no-untyped-def]
        from codeassist.lsp.backends import BackendStatus

        return BackendStatus("fake", "fake", "cpu", True, context_tokens=1024)

    async def complete(self, request):  # type: ignore[no-untyped-def]
        from codeassist.lsp.backends import BackendResult

        self.budgets.append(request.time_budget_s)
        return BackendResult(self.answers.get(request.prompt.prefix[-40:], ""), "stop")

    async def aclose(self) -> None:
        pass


def test_exact_match_asks_with_the_full_time_budget_and_counts_hits() -> None:
    import asyncio

    from codeassist.lsp.settings import Settings
    from codeassist.training.gate import _count_hits

    samples = line_samples(VAL, 6, seed=3)
    # answer half the cases right (keyed by the prompt's end, which is the document before the cut)
    answers = {s.document[:s.offset][-40:]: s.expected for s in samples[::2]}
    backend = _EchoBackend(answers)
    settings = Settings(multiline="never", cache=False, debounce_ms=0, temperature=0.0, time_budget_ms=30000)
    hits = asyncio.run(_count_hits(backend, settings, samples))
    assert hits == len(samples[::2])
    # a busy CPU must not lower the score: the typing budget (180 ms) is not applied
    assert backend.budgets == [30.0] * len(samples)


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
