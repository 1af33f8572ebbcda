"""Why deploy/ routes by editor session: two replicas behind deploy/nginx.conf, session hashing
against round robin, and how much of each keystroke's prompt came from a prefix cache.

    .venv/bin/python benchmarks/bench_affinity.py [--users 8] [--keystrokes 6] [--cache-mb 40]

Starts two `codeassist serve` replicas (a random model of the default shape, --prefix-cache-mb
small enough to hold a few users' windows) and nginx with deploy/nginx.conf pointed at them,
then once more with the `hash` line removed (nginx's round robin). The users type in turn, one
keystroke each, round after round (no concurrency, so the figures do not depend on the
machine's load): each request is the user's ~700-token window plus what they typed so far.
Prints cached prompt tokens per keystroke (usage.prompt_tokens_details.cached_tokens) and the
tokens both replicas prefilled. Needs nginx (Debian: apt-get install nginx-light).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import Server, free_port, metric, random_default_model, typing_scripts

CONF = Path(__file__).resolve().parents[1] / "deploy" / "nginx.conf"


def nginx_conf(tmp: Path, replicas: list[Server], port: int, hashed: bool) -> Path:
    text = CONF.read_text()
    servers = re.findall(r"^\s*server ([\w.-]+:\d+)", text, re.M)
    for address, replica in zip(servers, replicas, strict=True):
        text = text.replace(f"server {address} ", f"server 127.0.0.1:{replica.port} ")
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    if not hashed:
        text = re.sub(r"^\s*hash \$codeassist_affinity consistent;\n", "", text, flags=re.M)
    temps = " ".join(f"{k}_temp_path {tmp / k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    text = text.replace("http {", f"http {{\n    access_log off;\n    {temps}", 1)
    path = tmp / ("hashed.conf" if hashed else "round-robin.conf")
    path.write_text(f"pid {tmp / 'nginx.pid'};\nerror_log {tmp / 'error.log'} warn;\n" + text)
    return path


def run(model: Path, tmp: Path, users: int, keystrokes: int, cache_mb: int, hashed: bool) -> None:
    replicas = [Server(model, max_batch=4, max_queue=16, extra=("--prefix-cache-mb", str(cache_mb)))
                for _ in range(2)]
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    proc = None
    try:
        for r in replicas:
            r.wait_ready()
        conf = nginx_conf(tmp, replicas, port, hashed)
        proc = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
                                stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        scripts = typing_scripts(users)
        cached: list[int] = []
        prompt: list[int] = []
        before = sum(metric(r.url, "codeassist_prompt_tokens_total") for r in replicas)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as http:
            for k in range(keystrokes):
                for i, (window, typed) in enumerate(scripts):
                    r = http.post("/v1/completions", headers={"X-Codeassist-Session": f"user-{i}"},
                                  json={"prompt": window + typed[:k + 1], "max_tokens": 1, "temperature": 0})
                    r.raise_for_status()
                    usage = r.json()["usage"]
                    if k > 0:  # the first keystroke of each user is cold either way
                        cached.append(usage["prompt_tokens_details"]["cached_tokens"])
                        prompt.append(usage["prompt_tokens"])
        prefilled = sum(metric(r.url, "codeassist_prompt_tokens_total") for r in replicas) - before
        label = "session hashing" if hashed else "round robin"
        print(f"{label:<16} {users} users x {keystrokes} keystrokes: cached {sum(cached) / len(cached):5.0f} of "
              f"{sum(prompt) / len(prompt):4.0f} prompt tokens per keystroke after the first; "
              f"{sum(c == 0 for c in cached)} of {len(cached)} keystrokes fully cold; "
              f"prefilled {prefilled / (users * keystrokes):5.0f} tokens per keystroke")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        for r in replicas:
            r.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--keystrokes", type=int, default=6)
    ap.add_argument("--cache-mb", type=int, default=40, help="each replica's --prefix-cache-mb (~10 MB a user)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("CODEASSIST_HOME", tmp)
        model = random_default_model(Path(tmp), "default")
        for hashed in (True, False):
            run(model, Path(tmp), args.users, args.keystrokes, args.cache_mb, hashed)


if __name__ == "__main__":
    main()
