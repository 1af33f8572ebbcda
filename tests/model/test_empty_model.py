"""Loading a model builds its frame on the meta device without initialising it (model/architectures.py
`empty_model`): a random fill on a meta tensor imports sympy and torch's meta registrations, 74 MB
in every process that loads a model, the language server's included."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from torch.nn import init

from codeassist.model.architectures import _meta_fills_skipped, empty_model
from codeassist.model.config import ModelConfig
from codeassist.model.llama import LlamaConfig

PROBE = """
import json, sys
import torch
def rss_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
before = rss_mb()
from codeassist.model.engine import Engine
engine = Engine.load("default", device="cpu")
with torch.inference_mode():
    engine.prefill(engine.tokenizer.encode("def main():\\n    return"), 0)
print(json.dumps({"sympy": "sympy" in sys.modules, "grew_mb": rss_mb() - before}))
"""


def test_loading_the_default_model_and_running_it_imports_no_sympy() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["sympy"] is False
    # the model (19 MB), its packed kernels and a forward pass; 74 MB more when the frame was initialised
    assert report["grew_mb"] < 150, report


def test_the_frame_is_on_meta_with_every_parameter_and_buffer() -> None:
    for config in (ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=128),
                   LlamaConfig(family="qwen2", vocab_size=128, n_embd=32, n_head=4, n_kv_head=2, head_dim=8,
                               intermediate_size=64, n_layer=2, block_size=64, qkv_bias=True)):
        model = empty_model(config)
        tensors = [*model.parameters(), *model.buffers()]
        assert tensors and all(t.is_meta for t in tensors)


def test_while_skipping_real_tensors_are_filled_and_afterwards_init_is_restored() -> None:
    original = init.normal_
    with _meta_fills_skipped():
        assert init.normal_ is not original
        real = init.normal_(torch.zeros(1000))  # e.g. another thread initialising a real model
        assert float(real.std()) > 0.5
        meta = torch.empty(4, device="meta")
        assert init.normal_(meta) is meta
    assert init.normal_ is original
