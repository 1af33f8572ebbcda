"""Team server under load: continuous batching against the same server taking one request at a time.

    .venv/bin/python benchmarks/bench_serve.py [--model PATH] [--clients 16] [--requests 4]
    BENCH_DEVICE=cuda .venv/bin/python benchmarks/bench_serve.py --preset gpt2 --levels 1,16,64
    BENCH_THREADS=1 ...   (the server's --threads; 1 on a CPU shared with other work)
    .venv/bin/python benchmarks/bench_serve.py --workload typing --users 1,2,4 [--seconds 15]

Starts `codeassist serve` twice on loopback (--max-batch 16, then --max-batch 1), and drives
each with N concurrent clients sending completion-shaped requests: a window of about 300
tokens of real Python source, 32 new tokens (ignore_eos, so every request does the same work).
Prints throughput, the ratio, and p50/p99 latency. Then offers twice the load the batching
server admits (2 x (max batch + queue) clients) and counts the answers: only 429s with a
Retry-After are expected besides 200s, never an error.

`--workload typing` is editor traffic instead: N simulated users, each typing through a real
source file a keystroke every 150 ms; each keystroke sends the window an editor would (~700
tokens before the cursor, its start fixed while the user types) and cancels that user's previous
request if it is still running. Per-keystroke latency p50/p95 (of the requests that were not
superseded), with the prefix cache on and off, in the same run, and the most users each holds
at p95 <= 300 ms.

`--against llama-server` adds llama.cpp's server to the same typing run: the same model exported
to GGUF (`codeassist export --format gguf`, or `--gguf PATH`), one slot per user, `cache_prompt`
on, the same keystroke stream to its OpenAI-compatible /v1/completions, the same report. The
binaries come from benchmarks/setup_llamacpp.sh (built once, in a cache outside the repository).

The model's weights do not matter for throughput: by default a random model of the embedded
default model's shape (model/config.py preset "default") is saved to a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PROMPT_TOKENS = 300
NEW_TOKENS = 32


def prompts(count: int, seed: int = 0) -> list[str]:
    """Windows of ~300 tokens of standard-library source, each ending mid-line like a cursor."""
    from codeassist.model import tokenizer as tok

    rng = random.Random(seed)
    files = sorted(Path(os.__file__).parent.glob("*.py"))
    out: list[str] = []
    while len(out) < count:
        ids = tok.encode(rng.choice(files).read_text(errors="replace"))
        if len(ids) < PROMPT_TOKENS + 50:
            continue
        end = rng.randrange(PROMPT_TOKENS, len(ids) - 10)
        out.append(tok.decode(ids[end - PROMPT_TOKENS:end]))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, model: Path, max_batch: int, max_queue: int, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "codeassist.cli", "serve", "--model", str(model), "--port", str(self.port),
               "--max-batch", str(max_batch), "--max-queue", str(max_queue), "--request-timeout", "3600",
               "--log-level", "error", "--device", os.environ.get("BENCH_DEVICE", "auto"),
               "--threads", os.environ.get("BENCH_THREADS", "0"), *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)

    ready_path = "/ready"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("the server exited during start-up")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise SystemExit("the server did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(120)


class LlamaServer(Server):
    """llama.cpp's llama-server on loopback: one slot per user, each slot keeping its last prompt."""

    ready_path = "/health"  # 503 while the model loads

    def __init__(self, binaries: Path, gguf: Path, slots: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        threads = os.environ.get("BENCH_THREADS", "0")
        cmd = [str(binaries / "llama-server"), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(self.port),
               "--parallel", str(slots), "--ctx-size", str(slots * SLOT_TOKENS), "--no-kv-unified",
               "--threads", threads if threads != "0" else str(os.cpu_count() or 1), "--log-disable"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    missing_retry_after: int = 0
    errors: list[str] = field(default_factory=list)


async def client_loop(http: httpx.AsyncClient, texts: list[str], tally: Tally, retry_429: bool) -> None:
    for text in texts:
        while True:
            body = {"prompt": text, "max_tokens": NEW_TOKENS, "temperature": 0, "ignore_eos": True}
            t0 = time.perf_counter()
            try:
                r = await http.post("/v1/completions", json=body)
            except httpx.HTTPError as exc:
                tally.errors.append(type(exc).__name__)
                break
            tally.statuses[r.status_code] = tally.statuses.get(r.status_code, 0) + 1
            if r.status_code == 429:
                if "retry-after" not in r.headers:
                    tally.missing_retry_after += 1
                if retry_429:
                    await asyncio.sleep(0.1)
                    continue
                break
            if r.status_code != 200:
                tally.errors.append(f"HTTP {r.status_code}: {r.text[:120]}")
                break
            tally.latencies.append(time.perf_counter() - t0)
            tally.tokens += r.json()["usage"]["completion_tokens"]
            break


async def drive(url: str, per_client: list[list[str]], retry_429: bool = False) -> tuple[Tally, float]:
    tally = Tally()
    limits = httpx.Limits(max_connections=len(per_client) + 4)
    async with httpx.AsyncClient(base_url=url, timeout=3600, limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client_loop(http, texts, tally, retry_429) for texts in per_client))
        return tally, time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_mode(model: Path, label: str, max_batch: int, per_client: list[list[str]]) -> float:
    server = Server(model, max_batch=max_batch, max_queue=64)
    try:
        server.wait_ready()
        asyncio.run(drive(server.url, [per_client[0][:1]]))  # warm-up
        tally, wall = asyncio.run(drive(server.url, per_client))
    finally:
        server.stop()
    n = len(tally.latencies)
    tps = tally.tokens / wall
    print(f"{label:<34} {n:>4} requests  {tps:8.1f} tok/s  {n / wall:6.2f} req/s  "
          f"p50 {pct(tally.latencies, 0.5) * 1e3:7.0f} ms  p99 {pct(tally.latencies, 0.99) * 1e3:7.0f} ms"
          f"  errors {len(tally.errors)}")
    if tally.errors:
        raise SystemExit(f"requests failed: {sorted(set(tally.errors))[:3]}")
    return tps


def run_overload(model: Path, max_batch: int, max_queue: int, texts: list[str]) -> None:
    clients = 2 * (max_batch + max_queue)
    server = Server(model, max_batch=max_batch, max_queue=max_queue)
    try:
        server.wait_ready()
        per_client = [[texts[i % len(texts)]] for i in range(clients)]
        tally, wall = asyncio.run(drive(server.url, per_client, retry_429=False))
    finally:
        server.stop()
    ok = tally.statuses.get(200, 0)
    refused = tally.statuses.get(429, 0)
    print(f"2x overload: {clients} clients at once against batch {max_batch} + queue {max_queue}: "
          f"{ok} x 200, {refused} x 429 (missing Retry-After: {tally.missing_retry_after}), "
          f"other errors: {len(tally.errors)} {sorted(set(tally.errors))[:3]}  ({wall:.1f} s)")
    if tally.errors or tally.missing_retry_after or ok + refused != clients:
        raise SystemExit("overload produced answers other than 200 and 429 with Retry-After")


def run_levels(model: Path, levels: list[int], requests: int) -> None:
    """One batching server (max batch = the largest level), tokens/s at each concurrency."""
    server = Server(model, max_batch=max(levels), max_queue=4 * max(levels))
    texts = prompts(max(levels) * requests, seed=1)
    try:
        server.wait_ready()
        asyncio.run(drive(server.url, [texts[:1]]))  # warm-up
        for n in levels:
            per_client = [texts[i * requests:(i + 1) * requests] for i in range(n)]
            tally, wall = asyncio.run(drive(server.url, per_client))
            print(f"{n:>3} concurrent clients: {tally.tokens / wall:8.1f} tok/s  "
                  f"p50 {pct(tally.latencies, 0.5) * 1e3:6.0f} ms  p99 {pct(tally.latencies, 0.99) * 1e3:6.0f} ms  "
                  f"errors {len(tally.errors)}")
    finally:
        server.stop()


KEYSTROKE_S = 0.150
WINDOW_TOKENS = 700
TYPED_TOKENS = 16
SLOT_TOKENS = 1024  # llama-server's context per slot: the window, what is typed, the answer


def typing_scripts(users: int, seed: int = 2) -> list[tuple[str, str]]:
    """For each user: the window before the cursor when typing starts, and the text typed after."""
    from codeassist.model import tokenizer as tok

    rng = random.Random(seed)
    files = sorted(Path(os.__file__).parent.glob("*.py"))
    out: list[tuple[str, str]] = []
    while len(out) < users:
        ids = tok.encode(rng.choice(files).read_text(errors="replace"))
        if len(ids) < WINDOW_TOKENS + 400:
            continue
        cut = rng.randrange(WINDOW_TOKENS, len(ids) - 300)
        out.append((tok.decode(ids[cut - WINDOW_TOKENS:cut]), tok.decode(ids[cut:cut + 300])))
    return out


async def typist(http: httpx.AsyncClient, window: str, typed: str, seconds: float, tally: Tally,
                 cached: list[int], session: str, extra: dict[str, object]) -> None:
    """One user: a keystroke every 150 ms, each a request that supersedes the previous one."""
    headers = {"X-Codeassist-Session": session}  # as the language server sends it (deploy/ routes by it)

    async def keystroke(prompt: str) -> None:
        body = {"prompt": prompt, "max_tokens": TYPED_TOKENS, "temperature": 0, "ignore_eos": True, **extra}
        t0 = time.perf_counter()
        r = await http.post("/v1/completions", json=body, headers=headers)
        if r.status_code != 200:
            tally.errors.append(f"HTTP {r.status_code}")
            return
        tally.latencies.append(time.perf_counter() - t0)
        cached.append(r.json()["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0))

    task: asyncio.Task[None] | None = None
    t_start = time.perf_counter()
    for i in range(int(seconds / KEYSTROKE_S)):
        if task is not None and not task.done():
            task.cancel()  # the editor cancels: the connection closes, the server frees the row
            tally.statuses[-1] = tally.statuses.get(-1, 0) + 1
        task = asyncio.create_task(keystroke(window + typed[:i % len(typed)]))
        await asyncio.sleep(max(0.0, t_start + (i + 1) * KEYSTROKE_S - time.perf_counter()))
    if task is not None:
        await asyncio.gather(task, return_exceptions=True)


async def drive_typing(url: str, scripts: list[tuple[str, str]], seconds: float,
                       extra: dict[str, object] | None = None) -> tuple[Tally, list[int]]:
    tally, cached = Tally(), list[int]()
    limits = httpx.Limits(max_connections=4 * len(scripts) + 4)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(typist(http, w, t, seconds, tally, cached, f"bench-user-{i}", extra or {})
                               for i, (w, t) in enumerate(scripts)))
    return tally, cached


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def llamacpp_binaries() -> Path:
    """The folder holding llama-server, built by benchmarks/setup_llamacpp.sh if it is not yet."""
    script = Path(__file__).with_name("setup_llamacpp.sh")
    out = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=True).stdout
    return Path(out.strip().splitlines()[-1])


def export_gguf(model: Path, folder: Path) -> Path:
    """The benchmark's model as GGUF (`codeassist export --format gguf`), for llama-server."""
    out = folder / (model.stem + ".gguf")
    proc = subprocess.run([sys.executable, "-m", "codeassist.cli", "export", str(model), "--format", "gguf",
                           "--out", str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"could not export {model.name} to GGUF for llama-server (pass --gguf PATH): "
                         f"{(proc.stderr.strip().splitlines() or ['codeassist export failed'])[-1]}")
    return out


def run_typing(model: Path, levels: list[int], seconds: float, llama: tuple[Path, Path] | None = None) -> None:
    held: dict[str, int] = {}
    p50s: dict[tuple[str, int], float] = {}
    batch = max(16, max(levels))
    modes: list[tuple[str, Callable[[], Server], dict[str, object]]] = [
        ("prefix cache on",
         lambda: Server(model, max_batch=batch, max_queue=64, extra=("--prefix-cache-mb", "256")), {}),
        ("prefix cache off",
         lambda: Server(model, max_batch=batch, max_queue=64, extra=("--prefix-cache-mb", "0")), {}),
    ]
    if llama is not None:
        binaries, gguf = llama
        modes.append(("llama-server", lambda: LlamaServer(binaries, gguf, slots=max(levels)),
                      {"cache_prompt": True}))
    for label, start, extra in modes:
        server = start()
        ours = not isinstance(server, LlamaServer)
        try:
            server.wait_ready()
            asyncio.run(drive_typing(server.url, typing_scripts(1, seed=99), 2.0, extra))  # warm-up
            for n in levels:
                prefilled = metric(server.url, "codeassist_prompt_tokens_total") if ours else 0.0
                tally, cached = asyncio.run(drive_typing(server.url, typing_scripts(n), seconds, extra))
                p50, p95 = pct(tally.latencies, 0.5), pct(tally.latencies, 0.95)
                p50s[label, n] = p50
                if p95 <= 0.300:
                    held[label] = max(held.get(label, 0), n)
                sent = len(tally.latencies) + tally.statuses.get(-1, 0) + len(tally.errors)
                prefill = (f"prefilled tokens/keystroke "
                           f"{(metric(server.url, 'codeassist_prompt_tokens_total') - prefilled) / max(1, sent):4.0f}"
                           if ours else "prefilled tokens/keystroke    -")
                print(f"{label:<17} {n:>3} users: p50 {p50 * 1e3:6.0f} ms  p95 {p95 * 1e3:6.0f} ms  "
                      f"{sent} keystrokes, {tally.statuses.get(-1, 0)} superseded, errors {len(tally.errors)} "
                      f"{sorted(set(tally.errors))[:2]}, "
                      f"cached tokens/answer {sum(cached) / max(1, len(cached)):4.0f}, {prefill}")
        finally:
            server.stop()
    for n in levels:
        line = f"{n:>3} users: p50 ratio, cache off / on: {p50s['prefix cache off', n] / p50s['prefix cache on', n]:.1f}x"
        if llama is not None:
            line += f", llama-server / ours (cache on): {p50s['llama-server', n] / p50s['prefix cache on', n]:.2f}x"
        print(line)
    print(f"most users held at p95 <= 300 ms: cache on {held.get('prefix cache on', 0)}, "
          f"off {held.get('prefix cache off', 0)}"
          + (f", llama-server {held.get('llama-server', 0)}" if llama is not None else "") + f" (of {levels})")


def random_default_model(folder: Path, preset: str) -> Path:
    from codeassist.model.checkpoint import save_model
    from codeassist.model.config import get_preset
    from codeassist.model.gpt import GPT

    model = GPT(get_preset(preset))
    model.init_weights(0)
    path = folder / f"random-{preset}.safetensors"
    save_model(model, path, provenance={"data": "random weights for bench_serve"})
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a model name or file, e.g. default (the shipped int8 model); "
                                    "by default random fp32 weights of --preset's shape")
    ap.add_argument("--preset", default="default", help="shape of the random model (default, gpt2, tiny)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=4, help="requests per client in each mode")
    ap.add_argument("--skip-overload", action="store_true")
    ap.add_argument("--workload", choices=["batch", "typing"], default="batch")
    ap.add_argument("--users", default="1,2,4,8", help="typing: simulated users, one level per run")
    ap.add_argument("--seconds", type=float, default=15.0, help="typing: how long each level types")
    ap.add_argument("--levels", help="instead: tokens/s of one batching server at these client counts, e.g. 1,16,64")
    ap.add_argument("--against", choices=["llama-server"], help="typing: also llama.cpp's server, same model")
    ap.add_argument("--gguf", help="typing --against llama-server: the model as GGUF (default: exported now)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("CODEASSIST_HOME", tmp)
        model = Path(args.model) if args.model else random_default_model(Path(tmp), args.preset)
        if args.workload == "typing":
            llama = None
            if args.against == "llama-server":
                gguf = Path(args.gguf) if args.gguf else export_gguf(model, Path(tmp))
                llama = (llamacpp_binaries(), gguf)
            run_typing(model, [int(x) for x in args.users.split(",")], args.seconds, llama)
            return
        if args.levels:
            run_levels(model, [int(x) for x in args.levels.split(",")], args.requests)
            return
        texts = prompts(args.clients * args.requests)
        per_client = [texts[i * args.requests:(i + 1) * args.requests] for i in range(args.clients)]
        print(f"model {model.name}, {args.clients} concurrent clients x {args.requests} requests, "
              f"prompts ~{PROMPT_TOKENS} tokens, {NEW_TOKENS} new tokens each, cpu threads {os.cpu_count()}")
        batched = run_mode(model, f"continuous batching (max batch {args.clients})", args.clients, per_client)
        serial = run_mode(model, "one request at a time (max batch 1)", 1, per_client)
        print(f"throughput ratio, continuous batching / one at a time: {batched / serial:.2f}x (target >= 3x)")
        if not args.skip_overload:
            run_overload(model, max_batch=args.clients, max_queue=args.clients, texts=texts)


if __name__ == "__main__":
    main()
