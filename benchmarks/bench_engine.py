"""Engine speed against its peers, measured in one run on the same weights.

    .venv/bin/python benchmarks/bench_engine.py [--shapes default,gpt2] [--model PATH] [--threads 1]

Table 1, the foundation's figures (random weights, a random `--prompt`-token prompt, batch 1):
- our prefill ms and decode tokens/s (greedy, KV cache);
- the same against a naive generate that recomputes the whole sequence for every token;
- the same against transformers' GPT2LMHeadModel.generate (greedy, its own KV cache);
- a request that extends the previous prompt by 8 tokens: time to its first new token (prefix reuse),
  against the same request cold.

Table 2, decoding code (speculation): prompts cut at line starts in the standard library's held-out
files (training.stdlib's validation split), in two groups, by how much of the file's true next
`--code-new` tokens prompt lookup would have guessed from the context:
- `repeat`: at least half (the completion repeats its context: names, argument lists, lines);
- `novel`: at most a tenth (it cannot).
Each config decodes every prompt greedily for `--code-new` tokens; decode tok/s is all tokens after
the first over all decode time, per group. Configs: our engine in fp32 and int8, plain, with prompt
lookup, and with a draft model (int8 copy of the same weights drafting for fp32), and transformers'
generate on the same fp32 weights. `same` is the share of prompts whose tokens equal the plain
run of the same precision (HF: our fp32). `acc` is accepted / drafted tokens.

The default shape uses `--model` (a model file; the embedded default if present) so that the
model's own predictions decide acceptance; the gpt2 shape has random weights (no trained 124M is
available offline), whose degenerate greedy output makes its acceptance unrepresentative.
The machine is shared and noisy: every config is run `--repeats` times per prompt, interleaved,
and the fastest run counts. Read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from codeassist.model.config import get_preset
from codeassist.model.engine import Engine, GenerationRequest, GenerationResult, StopRules
from codeassist.model.gpt import GPT
from codeassist.model.hf_gpt2 import load_hf_gpt2
from codeassist.model.speculative import NgramIndex, SpeculationParams
from codeassist.model.tokenizer import N_GPT2, encode

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILE = ROOT / "model" / "assets" / "default.safetensors"


# -- models: ours and transformers' on the same weights --------------------------------------------

def hf_pair(shape: str, seed: int = 0) -> tuple[GPT, torch.nn.Module]:
    """A random transformers GPT-2 and our GPT loaded from its saved folder: the same weights."""
    import transformers

    cfg = get_preset(shape)
    hcfg = transformers.GPT2Config(vocab_size=N_GPT2, n_positions=cfg.block_size, n_embd=cfg.n_embd,
                                   n_layer=cfg.n_layer, n_head=cfg.n_head)
    torch.manual_seed(seed)
    hf = transformers.GPT2LMHeadModel(hcfg).eval()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        ours = load_hf_gpt2(Path(d))
    return ours, _hf_ready(hf)


def hf_from_ours(model: GPT) -> torch.nn.Module:
    """transformers' GPT-2 holding our model's weights (Conv1D weights are transposed)."""
    import transformers

    c = model.config
    hcfg = transformers.GPT2Config(vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd,
                                   n_layer=c.n_layer, n_head=c.n_head, layer_norm_epsilon=c.layer_norm_eps)
    hf = transformers.GPT2LMHeadModel(hcfg).eval()
    conv = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    sd = {k: (v.t() if k.endswith(conv) else v) for k, v in model.state_dict().items()}
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith(".attn.bias") for k in missing), (missing, unexpected)
    hf.tie_weights()
    return _hf_ready(hf)


def _hf_ready(hf: torch.nn.Module) -> torch.nn.Module:
    # the fairest peer: SDPA attention (its default), no EOS stopping (we decode a fixed length)
    # and no logits processors; generate() warms up before anything is timed
    hf.config._attn_implementation = "sdpa"
    hf.generation_config.eos_token_id = None  # type: ignore[union-attr]
    hf.generation_config.pad_token_id = 0  # type: ignore[union-attr]
    return hf


def quantize_int8(model: GPT) -> GPT | None:
    """The quantization engineer's int8 (per-channel weights, dynamic int8 kernel), if present."""
    try:
        from codeassist.quantization.quantize import quantize
    except ImportError:
        return None
    return quantize(model, "int8").build(model)


# -- table 1 --------------------------------------------------------------------------------------

def run_ours(engine: Engine, prompt: list[int], new: int) -> tuple[float, float]:
    """(prefill ms, decode seconds for the tokens after the first), cold cache."""
    engine.reset_prefix()
    res = engine.generate(GenerationRequest(prompt=tuple(prompt), stop=StopRules(max_new_tokens=new,
                                                                                 stop_on_eos=False)))
    return res.prefill_ms, (res.total_ms - res.first_token_ms) / 1e3


@torch.inference_mode()
def bench_naive(model: GPT, prompt: list[int], new: int) -> float:
    """Decode tokens/s when every token recomputes the whole sequence (no cache)."""
    ids = torch.tensor([prompt])
    model(ids)  # warm-up
    t0 = time.perf_counter()
    for _ in range(new):
        nxt = model(ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return new / (time.perf_counter() - t0)


@torch.inference_mode()
def hf_generate(hf: torch.nn.Module, prompt: list[int], n: int) -> tuple[list[int], float]:
    ids = torch.tensor([prompt])
    t0 = time.perf_counter()
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,  # type: ignore[operator]
                      do_sample=False)
    return out[0, len(prompt):].tolist(), time.perf_counter() - t0


@torch.inference_mode()
def bench_pair(engine: Engine, hf: torch.nn.Module, prompt: list[int], new: int,
               rounds: int = 3) -> tuple[float, float, float, float]:
    """Ours and transformers', interleaved round by round so both see the same machine load.

    (our prefill ms, our decode tok/s, HF prefill ms, HF decode tok/s), the fastest round of each.
    HF's prefill is generate(1) (prefill + one token, as ours); its decode is generate(new) - generate(1).
    """
    ids = torch.tensor([prompt])
    hf(ids, attention_mask=torch.ones_like(ids), logits_to_keep=1)  # warm-up
    hf_generate(hf, prompt, 2)
    run_ours(engine, prompt, 2)
    pre, dec, hf_first, hf_total = [], [], [], []
    for _ in range(rounds):
        p, d = run_ours(engine, prompt, new)
        pre.append(p)
        dec.append(d)
        hf_first.append(hf_generate(hf, prompt, 1)[1])
        hf_total.append(hf_generate(hf, prompt, new)[1])
    hf_dec = max(1e-9, min(hf_total) - min(hf_first))
    return min(pre), (new - 1) / min(dec), min(hf_first) * 1e3, (new - 1) / hf_dec


def bench_extend(engine: Engine, prompt: list[int], extra: int = 8) -> tuple[float, float]:
    """(warm, cold) ms to the first new token for a prompt extended by `extra` tokens."""
    base, ext = prompt[:-extra], prompt
    one = StopRules(max_new_tokens=1, stop_on_eos=False)
    warm, cold = [], []
    for _ in range(5):
        engine.reset_prefix()
        engine.generate(GenerationRequest(prompt=tuple(base), stop=one))
        warm.append(engine.generate(GenerationRequest(prompt=tuple(ext), stop=one)).first_token_ms)
        engine.reset_prefix()
        cold.append(engine.generate(GenerationRequest(prompt=tuple(ext), stop=one)).first_token_ms)
    return statistics.median(warm), statistics.median(cold)


def foundation_table(shapes: list[str], prompt_len: int, new: int, naive_new: int) -> None:
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, N_GPT2 - 1, (prompt_len,), generator=gen).tolist()
    header = (f"{'shape':8} {'params':>7} | {'prefill ms':>10} {'decode tok/s':>12} | {'naive tok/s':>11} "
              f"{'x naive':>7} | {'HF prefill':>10} {'HF tok/s':>8} {'x HF':>5} | {'+8 tok first ms':>15} "
              f"{'cold ms':>7}")
    print(f"\nTable 1: random weights, random prompt of {prompt_len} tokens, {new} new tokens, fp32")
    print(header)
    print("-" * len(header))
    for shape in shapes:
        ours, hf = hf_pair(shape)
        engine = Engine(ours, torch.device("cpu"), torch.float32)
        pre, dec, hf_pre, hf_dec = bench_pair(engine, hf, prompt, new)
        naive = bench_naive(engine.model, prompt, naive_new)
        warm, cold = bench_extend(engine, prompt)
        params = sum(p.numel() for p in ours.parameters()) / 1e6
        print(f"{shape:8} {params:6.1f}M | {pre:10.1f} {dec:12.1f} | {naive:11.1f} {dec / naive:6.1f}x | "
              f"{hf_pre:10.1f} {hf_dec:8.1f} {dec / hf_dec:4.2f}x | {warm:15.1f} {cold:7.1f}", flush=True)
        del engine, ours, hf


# -- table 2: code prompts -------------------------------------------------------------------------

def lookup_coverage(context: list[int], truth: list[int]) -> float:
    """Share of the true continuation that prompt lookup would have drafted, token by token."""
    index = NgramIndex(1, 3)
    index.extend(context)
    hits = 0
    for t in truth:
        hits += index.draft(1) == [t]
        index.extend([t])
    return hits / len(truth)


def code_prompts(ctx: int, new: int, per_group: int) -> dict[str, list[list[int]]]:
    """Held-out stdlib prompts, `per_group` per group, cut at line starts, one per file at most."""
    from codeassist.training.stdlib import split_documents, stdlib_documents

    _, held_out = split_documents(stdlib_documents())
    groups: dict[str, list[list[int]]] = {"repeat": [], "novel": []}
    for doc in held_out:
        ids = encode(doc.text)
        newline = set(encode("\n"))
        starts = [i + 1 for i in range(ctx, len(ids) - new - 1) if ids[i] in newline]
        taken: set[str] = set()
        for i in starts[:: max(1, len(starts) // 12)]:
            cov = lookup_coverage(ids[i - ctx:i], ids[i:i + new])
            group = "repeat" if cov >= 0.5 else "novel" if cov <= 0.1 else None
            if group and group not in taken and len(groups[group]) < per_group:
                groups[group].append(ids[i - ctx:i])
                taken.add(group)
        if all(len(g) == per_group for g in groups.values()):
            break
    return groups


@dataclass
class Tally:
    tokens: int = 0
    seconds: float = 0.0
    drafted: int = 0
    accepted: int = 0
    same: int = 0
    runs: int = 0
    outputs: list[list[int]] = field(default_factory=list)

    def add(self, tokens: list[int], seconds: float, res: GenerationResult | None) -> None:
        self.tokens += len(tokens) - 1
        self.seconds += seconds
        self.outputs.append(tokens)
        if res is not None:
            self.drafted += res.drafted_tokens
            self.accepted += res.accepted_tokens

    @property
    def tok_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


Runner = Callable[[list[int]], tuple[list[int], float, GenerationResult | None]]


def engine_runner(engine: Engine, new: int, spec: SpeculationParams, repeats: int) -> Runner:
    def run(prompt: list[int]) -> tuple[list[int], float, GenerationResult | None]:
        best: GenerationResult | None = None
        for _ in range(repeats):
            engine.reset_prefix()
            res = engine.generate(GenerationRequest(prompt=tuple(prompt), speculation=spec,
                                                    stop=StopRules(max_new_tokens=new, stop_on_eos=False)))
            if best is None or res.total_ms - res.first_token_ms < best.total_ms - best.first_token_ms:
                best = res
        assert best is not None
        return best.tokens, (best.total_ms - best.first_token_ms) / 1e3, best
    return run


def hf_runner(hf: torch.nn.Module, new: int, repeats: int) -> Runner:
    def run(prompt: list[int]) -> tuple[list[int], float, GenerationResult | None]:
        first = min(hf_generate(hf, prompt, 1)[1] for _ in range(repeats))
        runs = [hf_generate(hf, prompt, new) for _ in range(repeats)]
        return runs[0][0], max(1e-9, min(t for _, t in runs) - first), None
    return run


def shape_models(shape: str, model_file: Path | None) -> tuple[GPT, GPT | None, torch.nn.Module, str]:
    """(fp32 GPT, its int8 version or None, transformers' GPT-2 on the fp32 weights, a label).

    A quantized model file (the embedded default is int8) is its own int8 row; the fp32 rows and
    transformers run its dequantized weights, which compute what the int8 model approximates."""
    if shape == "default" and model_file is not None:
        from codeassist.model.checkpoint import load_model
        from codeassist.model.quantized import dequantize_model, is_quantized

        loaded, info = load_model(model_file)
        if is_quantized(loaded):
            ours = dequantize_model(loaded).eval()
            return ours, loaded, hf_from_ours(ours), f"weights {model_file.name}, {info.scheme} (fp32: dequantized)"
        return loaded, quantize_int8(loaded), hf_from_ours(loaded), f"weights {model_file.name}"
    ours = GPT(get_preset(shape))  # the full vocabulary: code prompts use the space-run tokens
    ours.init_weights(seed=0)
    ours.eval()
    return ours, quantize_int8(ours), hf_from_ours(ours), "random weights"


def code_table(shape: str, model_file: Path | None, groups: dict[str, list[list[int]]], new: int,
               repeats: int, num_draft: int) -> None:
    ours, q8, hf, weights = shape_models(shape, model_file)
    cpu = torch.device("cpu")
    lookup = SpeculationParams(method="prompt_lookup", num_draft=num_draft)
    draft = SpeculationParams(method="draft", num_draft=num_draft)
    fp32 = Engine(ours, cpu, torch.float32, draft_model=q8)
    configs: dict[str, tuple[Runner, str]] = {
        "fp32": (engine_runner(fp32, new, SpeculationParams(), repeats), "fp32"),
        "fp32+lookup": (engine_runner(fp32, new, lookup, repeats), "fp32"),
    }
    if q8 is not None:
        configs["fp32+draft(int8 self)"] = (engine_runner(fp32, new, draft, repeats), "fp32")
        int8 = Engine(q8, cpu, torch.float32)
        configs["int8"] = (engine_runner(int8, new, SpeculationParams(), repeats), "int8")
        configs["int8+lookup"] = (engine_runner(int8, new, lookup, repeats), "int8")
    configs["HF generate fp32"] = (hf_runner(hf, new, repeats), "fp32")
    for runner, _ in configs.values():  # warm-up (first-call costs, int8 packing)
        runner(groups["novel"][0][:64])
    params = sum(p.numel() for p in ours.parameters()) / 1e6
    print(f"\nTable 2: {shape} ({params:.0f}M, {weights}), {len(next(iter(groups.values()))[0])}-token code "
          f"prompts, {new} new tokens, greedy, num_draft {num_draft}"
          + ("" if q8 is not None else "; int8 rows missing: codeassist.quantization is not importable"))
    tallies = {g: {name: Tally() for name in configs} for g in groups}
    for g, prompts in groups.items():
        for prompt in prompts:
            for name, (runner, _) in configs.items():
                tokens, seconds, res = runner(prompt)
                tallies[g][name].add(tokens, seconds, res)
    header = (f"{'group':6} {'config':22} | {'decode tok/s':>12} {'x fp32':>7} {'x HF':>6} | {'acc':>5} "
              f"{'same':>5}")
    print(header)
    print("-" * len(header))
    for g, by_name in tallies.items():
        base, peer = by_name["fp32"], by_name["HF generate fp32"]
        for name, t in by_name.items():
            ref = by_name.get(configs[name][1], base)
            same = sum(a == b for a, b in zip(t.outputs, ref.outputs, strict=True)) / len(t.outputs)
            acc = f"{t.accepted / t.drafted:5.2f}" if t.drafted else "    -"
            print(f"{g:6} {name:22} | {t.tok_s:12.1f} {t.tok_s / base.tok_s:6.2f}x {t.tok_s / peer.tok_s:5.2f}x"
                  f" | {acc} {same:5.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="default,gpt2")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--naive-new", type=int, default=16, help="tokens for the (slow) no-cache peer")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for every engine (one: two collapse when another job holds a core)")
    ap.add_argument("--model", type=Path, default=DEFAULT_FILE if DEFAULT_FILE.exists() else None,
                    help="weights for the default shape in table 2 (default: the embedded model)")
    ap.add_argument("--code-prompt", type=int, default=384)
    ap.add_argument("--code-new", type=int, default=48)
    ap.add_argument("--per-group", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--num-draft", type=int, default=8)
    ap.add_argument("--tables", default="1,2")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Writing model shards" would clutter the table
    print(f"torch {torch.__version__}, {args.threads} threads, batch 1")
    shapes = args.shapes.split(",")
    if "1" in args.tables.split(","):
        foundation_table(shapes, args.prompt, args.new, args.naive_new)
    if "2" in args.tables.split(","):
        groups = code_prompts(args.code_prompt, args.code_new, args.per_group)
        for shape in shapes:
            code_table(shape, args.model, groups, args.code_new, args.repeats, args.num_draft)


if __name__ == "__main__":
    main()
