"""The report, end to end on the tiny model: every variant is written, loaded and measured."""

from __future__ import annotations

import pytest

from codeassist.quantization.report import ReportConfig, format_table, quality_report
from tests.conftest import make_tiny


@pytest.mark.slow
def test_report_measures_every_variant() -> None:
    cfg = ReportConfig(group_size=32, eval_tokens=300, em_samples=2, calib_samples=2, calib_seq_len=64,
                       prompt_tokens=32, decode_tokens=4, repeats=1, speed_shape=None)
    rows = quality_report(make_tiny(), cfg, progress=lambda _msg: None)
    assert [r.name for r in rows] == ["fp32", "bf16", "int8", "int4-g32", "int4-gptq-g32", "int8-fp32head"]
    sizes = {r.name: r.size_bytes for r in rows}
    assert sizes["int8"] < 0.3 * sizes["fp32"] and sizes["int4-g32"] < sizes["int8"] < sizes["bf16"]
    assert sizes["int8-fp32head"] > 0.7 * sizes["fp32"]  # the tied table is most of a small model
    for r in rows:
        assert r.perplexity is not None and r.perplexity > 1
        assert r.exact_match is not None and 0 <= r.exact_match <= 1
        assert r.prefill_ms > 0 and r.decode_tps > 0
    # a random tiny model: quantization may move perplexity, but not by much
    assert all(abs(r.perplexity / rows[0].perplexity - 1) < 0.1 for r in rows if r.perplexity)
    table = format_table("tiny", rows)
    assert table.count("\n") == 1 + len(rows) and "int4-gptq-g32" in table
