"""bench_families runs end to end on a tiny Qwen2 shape (without llama.cpp) and reports its ratios."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_families.py"


@pytest.mark.slow
def test_tiny_shape_reports_every_config_and_ratio(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--shape", "tiny", "--llamacpp", "none", "--threads", "1",
                           "--prompt", "32", "--decode", "4", "--repeats", "1", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    configs = {r["config"] for r in report["rows"]}
    assert configs == {"ours fp32", "ours int8", "transformers fp32"}
    assert all(r["prefill_ms"] > 0 and r["decode_tok_s"] > 0 for r in report["rows"])
    assert set(report["ratios"]) == {"int8 decode / transformers fp32, 1t"}
    folder = tmp_path / "cache" / "codeassist-bench" / "tiny-random-0"
    assert (folder / "tokenizer.json").exists() and (folder / "model.safetensors").exists()
