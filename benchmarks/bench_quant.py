"""Quantization side by side: fp32, bf16, int8, int4 and int4-GPTQ (size, perplexity, exact match, speed).

    .venv/bin/python benchmarks/bench_quant.py [MODEL] [--threads 1] [--speed-shape gpt2|none] [...]

The same as `codeassist quantize --report MODEL` (MODEL defaults to `default`); every option of
that command works here. Figures are printed with ratios against fp32 measured in the same run.
"""

from __future__ import annotations

import sys

from codeassist.cli.main import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        args = ["default", *args]
    sys.exit(main(["quantize", "--report", *args]))
