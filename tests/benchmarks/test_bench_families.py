"""bench_families runs end to end on a tiny Qwen2 shape (without llama.cpp) and reports its ratios.

The script's `main` runs in this process (as test_bench_engine loads bench_engine): a subprocess
spent most of its time importing torch and transformers again, which the session has already done.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch


@pytest.mark.slow
def test_tiny_shape_reports_every_config_and_ratio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str],
                                                  load_bench: Callable[[str], ModuleType]) -> None:
    bench = load_bench("bench_families")
    monkeypatch.setattr(bench, "CACHE", tmp_path / "cache" / "codeassist-bench")  # what XDG_CACHE_HOME sets
    out = tmp_path / "r.json"
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--shape", "tiny", "--llamacpp", "none", "--threads", "1", "--prompt", "32",
                           "--decode", "4", "--repeats", "1", "--json", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # the script sets the count it measures
    assert "ratios" in capsys.readouterr().out
    report = json.loads(out.read_text())
    configs = {r["config"] for r in report["rows"]}
    assert configs == {"ours fp32", "ours int8", "transformers fp32"}
    assert all(r["prefill_ms"] > 0 and r["decode_tok_s"] > 0 for r in report["rows"])
    assert set(report["ratios"]) == {"int8 decode / transformers fp32, 1t"}
    folder = tmp_path / "cache" / "codeassist-bench" / "tiny-random-0"
    assert (folder / "tokenizer.json").exists() and (folder / "model.safetensors").exists()
