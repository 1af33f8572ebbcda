"""The open model families' speed on a CPU against transformers and llama.cpp, in one run, on the same weights.

    .venv/bin/python benchmarks/bench_families.py [--shape qwen2.5-coder-0.5b] [--threads 1,2]
        [--prompt 512] [--decode 32] [--llamacpp auto|none|BIN_DIR] [--json OUT]

A Qwen2-family model of Qwen2.5-Coder-0.5B's shape (24 layers, width 896, 14 heads over 2 KV
heads, SwiGLU 4864, 151,936-token tied vocabulary: 494M parameters) with random weights (speed does
not depend on the values; no trained weights are reachable offline), made by transformers and saved
once into a cache folder. For each thread count:

- ours fp32 and int8 (model/llama.py through `families.load_pretrained`, `codeassist quantize`'s
  int8): the prefill of a `--prompt`-token prompt (ms) and greedy decoding (tokens/s) through the KV
  cache, one token a step with its host sync, as the engine's decode step runs it;
- transformers fp32 on the same folder: the same prefill and the same greedy loop over its cache;
- llama.cpp's llama-bench on our GGUF export of the same weights (`codeassist export --format gguf`),
  F32 and Q8_0 (made by llama-quantize), pp`--prompt` and tg`--decode`; built once by
  benchmarks/setup_llamacpp.sh (`--llamacpp none` skips it).

Targets (issue 15): our int8 decode at least 2x transformers fp32, and within 1.5x of llama.cpp
Q8_0. The machine is shared and noisy: each figure is the best of `--repeats`, configs interleaved.
Read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "codeassist-bench"

SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-coder-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14,
                               num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                               max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                               tie_word_embeddings=True),
    # for a quick check of the script itself
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=512, max_position_embeddings=2048, rope_theta=10000.0,
                 rms_norm_eps=1e-6, tie_word_embeddings=True),
}


def random_folder(shape: str, seed: int = 0) -> Path:
    """The transformers Qwen2 model of `shape` with random weights, saved once (fp32 safetensors)."""
    folder = CACHE / f"{shape}-random-{seed}"
    if (folder / "config.json").exists():
        return folder
    import transformers

    torch.manual_seed(seed)
    cfg = transformers.Qwen2Config(**SHAPES[shape])
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tmp.rename(folder)
    return folder


def write_tokenizer(folder: Path, vocab_size: int) -> None:
    """A Qwen2-shaped tokenizer.json of exactly `vocab_size` ids for the random model (the GGUF
    export needs one; llama-bench never tokenizes): the 256 byte-level characters, two-byte merges in
    a fixed order until the vocabulary is full, Qwen2's pre-tokenizer and its FIM and end tokens."""
    if (folder / "tokenizer.json").exists():
        return
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    specials = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                "<|repo_name|>", "<|file_sep|>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    room = vocab_size - len(specials)
    for a in alphabet:
        for b in alphabet:
            if len(vocab) >= room:
                break
            vocab[a + b] = len(vocab)
            merges.append((a, b))
    for a in alphabet:  # three-character tokens until full (151,936 needs more than 256 + 256^2)
        for pair in list(vocab)[256:]:
            if len(vocab) >= room:
                break
            if len(pair) == 2 and a + pair not in vocab:
                vocab[a + pair] = len(vocab)
                merges.append((a, pair))
        if len(vocab) >= room:
            break
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    qwen2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
             r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(qwen2), behavior="isolated"),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken(t, special=True) for t in specials])
    assert tk.get_vocab_size() == vocab_size, tk.get_vocab_size()
    tk.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "add_bos_token": False}))


def _best(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@torch.no_grad()
def ours(model: Any, prompt: torch.Tensor, decode: int, repeats: int) -> tuple[float, float]:
    """(prefill ms, decode tokens/s) of our model: the engine's prefill and one-token steps."""
    T = prompt.size(1)
    model.setup_kv_cache(1, T + decode + 1)

    def prefill() -> torch.Tensor:
        return model(prompt, input_pos=torch.arange(T).unsqueeze(0), kv_len=T, last_only=True)

    pre = _best(prefill, repeats)

    def run_decode() -> None:
        logits = prefill()
        tok = int(logits[0, -1].argmax())
        t0 = time.perf_counter()
        for i in range(decode):
            pos = T + i
            logits = model(torch.tensor([[tok]]), input_pos=torch.tensor([[pos]]), kv_len=pos + 1, last_only=True)
            tok = int(logits[0, -1].argmax())
        run_decode.dt = time.perf_counter() - t0  # type: ignore[attr-defined]

    best = float("inf")
    for _ in range(repeats):
        run_decode()
        best = min(best, run_decode.dt)  # type: ignore[attr-defined]
    model.drop_kv_cache()
    return pre * 1000, decode / best


def _cache(out: Any) -> dict[str, Any]:
    """The cache to pass back, under the name this transformers uses (past_key_values became cache in 5.x)."""
    return {"cache": out["cache"]} if "cache" in out else {"past_key_values": out["past_key_values"]}


@torch.no_grad()
def transformers_fp32(model: Any, prompt: torch.Tensor, decode: int, repeats: int) -> tuple[float, float]:
    """The same prefill and greedy loop through transformers' own KV cache."""
    pre = _best(lambda: model(prompt, use_cache=True, logits_to_keep=1), repeats)
    best = float("inf")
    for _ in range(repeats):
        out = model(prompt, use_cache=True, logits_to_keep=1)
        past, tok = _cache(out), int(out.logits[0, -1].argmax())
        t0 = time.perf_counter()
        for _ in range(decode):
            out = model(torch.tensor([[tok]]), **past, use_cache=True)
            past, tok = _cache(out), int(out.logits[0, -1].argmax())
        best = min(best, time.perf_counter() - t0)
    return pre * 1000, decode / best


def llamacpp_bin(arg: str) -> Path | None:
    if arg == "none":
        return None
    if arg != "auto":
        return Path(arg)
    out = subprocess.run(["bash", str(ROOT / "benchmarks" / "setup_llamacpp.sh")], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"llama.cpp could not be built (skipped): {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return Path(out.stdout.strip().splitlines()[-1])


def gguf_files(folder: Path, bin_dir: Path) -> dict[str, Path]:
    """Our GGUF export of the folder (F32), and its Q8_0 by llama-quantize; made once."""
    f32, q8 = folder / "export-f32.gguf", folder / "export-q8_0.gguf"
    if not f32.exists():
        from codeassist.model.export import export_model

        export_model(str(folder), "gguf", f32)
    if not q8.exists():
        subprocess.run([str(bin_dir / "llama-quantize"), str(f32), str(q8), "Q8_0"], check=True,
                       capture_output=True)
    return {"F32": f32, "Q8_0": q8}


def llama_bench(bin_dir: Path, gguf: Path, threads: list[int], prompt: int, decode: int,
                repeats: int) -> dict[int, tuple[float, float]]:
    """{threads: (prefill ms, decode tokens/s)} from llama-bench's JSON."""
    out = subprocess.run([str(bin_dir / "llama-bench"), "-m", str(gguf), "-p", str(prompt), "-n", str(decode),
                          "-t", ",".join(map(str, threads)), "-r", str(repeats), "-o", "json"],
                         capture_output=True, text=True, check=True)
    rows = json.loads(out.stdout)
    res: dict[int, list[float]] = {}
    for row in rows:
        t = int(row["n_threads"])
        entry = res.setdefault(t, [0.0, 0.0])
        if row["n_prompt"] > 0:
            entry[0] = prompt / float(row["avg_ts"]) * 1000
        else:
            entry[1] = float(row["avg_ts"])
    return {t: (v[0], v[1]) for t, v in res.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="qwen2.5-coder-0.5b", choices=sorted(SHAPES))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--llamacpp", default="auto", help="auto (build once), none, or the folder of llama-bench")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import transformers

    from codeassist.model.families import load_pretrained
    from codeassist.quantization.quantize import quantize

    threads = [int(t) for t in args.threads.split(",")]
    folder = random_folder(args.shape)
    write_tokenizer(folder, SHAPES[args.shape]["vocab_size"])
    fp32, _ = load_pretrained(folder, dtype=torch.float32)
    int8 = quantize(fp32, "int8").build(fp32)
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    vocab = SHAPES[args.shape]["vocab_size"]
    prompt = torch.randint(0, vocab, (1, args.prompt), generator=torch.Generator().manual_seed(1))

    bin_dir = llamacpp_bin(args.llamacpp)
    cpp: dict[str, dict[int, tuple[float, float]]] = {}
    if bin_dir is not None:
        for kind, path in gguf_files(folder, bin_dir).items():
            cpp[kind] = llama_bench(bin_dir, path, threads, args.prompt, args.decode, args.repeats)

    rows: list[dict[str, Any]] = []
    for t in threads:
        torch.set_num_threads(t)
        for name, fn, model in (("ours fp32", ours, fp32), ("ours int8", ours, int8),
                                ("transformers fp32", transformers_fp32, hf)):
            pre, tps = fn(model, prompt, args.decode, args.repeats)
            rows.append({"config": name, "threads": t, "prefill_ms": pre, "decode_tok_s": tps})
        for kind, by_threads in cpp.items():
            if t in by_threads:
                pre, tps = by_threads[t]
                rows.append({"config": f"llama.cpp {kind}", "threads": t, "prefill_ms": pre, "decode_tok_s": tps})

    print(f"\n{args.shape}, random weights, {args.prompt}-token prefill, {args.decode} greedy decode steps, "
          f"torch {torch.__version__}, transformers {transformers.__version__}")
    print(f"{'config':<20} {'threads':>7} {'prefill ms':>11} {'decode tok/s':>13}")
    for r in rows:
        print(f"{r['config']:<20} {r['threads']:>7} {r['prefill_ms']:>11.1f} {r['decode_tok_s']:>13.2f}")
    ratios: dict[str, float] = {}
    for t in threads:
        get = {r["config"]: r for r in rows if r["threads"] == t}
        ours8 = get["ours int8"]["decode_tok_s"]
        ratios[f"int8 decode / transformers fp32, {t}t"] = ours8 / get["transformers fp32"]["decode_tok_s"]
        if "llama.cpp Q8_0" in get:
            ratios[f"int8 decode / llama.cpp Q8_0, {t}t"] = ours8 / get["llama.cpp Q8_0"]["decode_tok_s"]
        if "llama.cpp F32" in get:
            ratios[f"fp32 decode / llama.cpp F32, {t}t"] = (get["ours fp32"]["decode_tok_s"]
                                                             / get["llama.cpp F32"]["decode_tok_s"])
    print("\nratios (targets: int8 / transformers fp32 >= 2.0; int8 / llama.cpp Q8_0 >= 0.67):")
    for k, v in ratios.items():
        print(f"  {k:<40} {v:6.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"shape": args.shape, "rows": rows, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
