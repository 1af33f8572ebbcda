"""Does `codeassist train PROJECT` pay on projects the default model never saw? (issue 20)

    nice -n 10 .venv/bin/python benchmarks/bench_finetune.py [--projects itsdangerous,humanize]
        [--budget-min 30] [--variant default --variant replay ...] [--jobs 1] [--json OUT.json]

Each project is a public Python package at a pinned version that is in no training data: not
the standard library and not on the default model's corpus list (training/corpus.py; checked
below). Its source distribution (the project as its repository has it, tests included; the wheel
where there is no sdist) is fetched once with `pip download --no-deps` into a cache folder
outside the repository (--cache), unpacked and committed to a git repository there, as a user's
checkout would be. Nothing is fetched after that.

For each project and variant the benchmark runs `codeassist train PROJECT --yes` in a separate
process, with the default settings plus the variant's flags and a time budget of --budget-min
(default: the product's default), in a data folder of its own (CODEASSIST_HOME under the
cache), so the user's models are never touched. Before and after are the train command's own
gate: held-out loss on the project's held-out files and line exact match through the language
server's pipeline on the gate's line sample (training/gate.py), the untrained default model
against the trained one on the same lines, with McNemar's exact test on the lines that changed
(training/verdict.py). The run writes them to its report.json, which this script reads, so the
figures are the ones a user is shown. A variant is compared with `default` when both ran.

Two cores take about the budget plus a few minutes of gate per project and variant.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codeassist.training.cli import DEFAULT_TIME_BUDGET_S
from codeassist.training.corpus import PACKAGES
from codeassist.training.corpus_sources import Pin, fetch_archive, find_archive, normalize

# Public Python projects in no training data, pinned to the newest release PyPI offered on
# 2026-12-01 (sizes: the .py text of the sdist, tests included; lines: the gate's sample, at most
# 300, from the code files `codeassist train` holds out).
PROJECTS: tuple[Pin, ...] = tuple(Pin(n, v) for n, v in (
    ("h11", "0.16.0"),  # 27 .py files, 0.20 MB; 204 lines
    ("tenacity", "9.2.1"),  # 21 .py files, 0.21 MB; 300 lines
    ("cachetools", "8.0.2"),  # 21 .py files, 0.21 MB; 300 lines
    ("pathspec", "1.1.1"),  # 88 .py files, 0.40 MB; 300 lines
    ("structlog", "26.1.0"),  # 46 .py files, 0.50 MB; 300 lines
    # small: one held-out file, under 100 lines, so only large differences are beyond noise;
    # quick to run (smoke runs), not in the default set
    ("itsdangerous", "2.2.0"),  # 15 .py files, 0.06 MB; 53 lines
    ("humanize", "4.17.0"),  # 14 .py files, 0.12 MB; 78 lines
))
DEFAULT_PROJECTS = ("h11", "tenacity", "cachetools", "pathspec", "structlog")
# Projects the issue or earlier sessions tried, or that ship near-copies of other training data:
# kept off the benchmark, as the corpus list is.
EXCLUDED = frozenset(normalize(n) for n in (
    "requests", "attrs", "click", "jinja2", "urllib3", "pygments", "httpx", "anyio", "starlette",
    "packaging", "markdown", "werkzeug", "tomli"))

# The levers of `codeassist train` (training/finetune.py), one named set of flags each.
VARIANTS: dict[str, tuple[str, ...]] = {
    "default": (),
    "replay": ("--replay", "0.25"),
    "early-stop": ("--early-stop", "3"),
    "dropout": ("--dropout", "0.1"),
    "fim-0.9": ("--fim-rate", "0.9"),
    "fim-0.2": ("--fim-rate", "0.2"),
    "lr-low": ("--lr", "3e-4"),
    "warmup-100": ("--warmup", "100"),
    "replay+early-stop": ("--replay", "0.25", "--early-stop", "3"),
}


def _check_unseen() -> None:
    corpus = {p.key for p in PACKAGES}
    clash = [p.name for p in PROJECTS if p.key in corpus or p.key in EXCLUDED]
    if clash:
        raise SystemExit(f"benchmark projects in training data or excluded: {', '.join(clash)}")


# ---- projects ---------------------------------------------------------------------------------

def fetch(archives: Path, pin: Pin) -> Path:
    """The project's archive, downloaded once (the sdist, which holds its tests and docs; the
    wheel when there is none): the corpus's fetch, preferring the other kind."""
    archive = find_archive(archives, pin, prefer="sdist")
    if archive is not None:
        return archive
    try:
        return fetch_archive(archives, pin, prefer="sdist")
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from None


def unpack(archive: Path, projects: Path, pin: Pin) -> Path:
    """The project as a git repository (one commit), made once."""
    folder = projects / f"{pin.key}-{pin.version}"
    if (folder / ".git").is_dir():
        return folder
    tmp = projects / f".{folder.name}.tmp"
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    tmp.mkdir(parents=True)
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
    else:
        with tarfile.open(archive) as t:
            t.extractall(tmp, filter="data")
    inner = list(tmp.iterdir())
    root = inner[0] if len(inner) == 1 and inner[0].is_dir() else tmp
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", f"{pin.name} {pin.version}"]):
        subprocess.run(["git", "-C", str(root), *args], check=True, env=env, capture_output=True)
    os.replace(root, folder)
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    return folder


def py_megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.py") if ".git" not in p.parts) / 1e6


# ---- runs -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    project: Pin
    folder: Path
    variant: str
    flags: tuple[str, ...]


def forget_model(home: Path, name: str) -> None:
    """Remove the model `name` a previous benchmark run installed (and its .previous), so the gate
    compares with the default model again rather than with that run's model."""
    for path in (home / "models").glob(f"{name}.*"):
        if path.name.startswith((f"{name}.safetensors", f"{name}.previous.", f"{name}.loss.")):
            path.unlink()


def train(run: Run, home: Path, budget_min: float, threads: int | None, logs: Path) -> dict[str, Any]:
    """`codeassist train` on one project in its own process; its report.json and the time it took."""
    name = f"bench-{run.project.key}-{run.variant}".replace("+", "-").replace(".", "")
    forget_model(home, name)
    cmd = [sys.executable, "-m", "codeassist.cli.main", "train", str(run.folder), "--yes", "--out", name,
           "--time-budget", f"{budget_min * 60:g}s", "--no-progress", *run.flags]
    if threads:
        cmd += ["--threads", str(threads)]
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    t0 = time.monotonic()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, env={**os.environ, "CODEASSIST_HOME": str(home)}, stdout=fh,
                            stderr=subprocess.STDOUT, check=False).returncode
    wall = time.monotonic() - t0
    report = home / "runs" / name / "report.json"
    if rc != 0 or not report.exists():
        tail = log.read_text()[-600:]
        return {"error": f"codeassist train exited {rc}; see {log}", "log_tail": tail, "wall_s": wall}
    data: dict[str, Any] = json.loads(report.read_text())
    data["wall_s"] = wall
    data["log"] = str(log)
    return data


def row(run: Run, mb: float, rep: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"project": f"{run.project.name}=={run.project.version}", "mb": round(mb, 3),
                           "variant": run.variant, "flags": list(run.flags)}
    if "error" in rep:
        return {**out, "error": rep["error"], "log_tail": rep["log_tail"]}
    g, t = rep["gate"], rep["train"]
    v = g["verdict"]
    return {**out, "steps": t["steps"], "epochs": round(t["passes"], 2), "train_s": round(t["elapsed_s"]),
            "wall_s": round(rep["wall_s"]), "stopped_early": t["stopped_early"], "best_step": t["best_step"],
            "loss_before": g["old"]["loss"], "loss_after": g["new"]["loss"],
            "em_before": g["old"]["exact_match"], "em_after": g["new"]["exact_match"], "lines": g["new"]["lines"],
            "gain_points": 100 * (g["new"]["exact_match"] - g["old"]["exact_match"]),
            "gained": v["gained"], "lost": v["lost"], "p_value": v["p_value"], "beyond_noise": v["beyond_noise"],
            "installed": g["better"]}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| project | MB | variant | steps (passes) | held-out loss | line exact match | gain | "
             "right/wrong | McNemar p |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['project']} | {r['mb']:.2f} | {r['variant']} | failed: {r['error']} | | | | | |")
            continue
        stop = f", stopped at best {r['best_step']}" if r["stopped_early"] else ""
        lines.append(
            f"| {r['project']} | {r['mb']:.2f} | {r['variant']} | {r['steps']} ({r['epochs']:g}{stop}) | "
            f"{r['loss_before']:.2f} → {r['loss_after']:.2f} | "
            f"{100 * r['em_before']:.1f}% → {100 * r['em_after']:.1f}% ({r['lines']} lines) | "
            f"{r['gain_points']:+.1f} | +{r['gained']}/−{r['lost']} | {r['p_value']:.3f} |")
    return "\n".join(lines)


def summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant: mean gain, worst project, and the paired difference from `default`."""
    out: dict[str, dict[str, Any]] = {}
    ok = [r for r in rows if "error" not in r]
    base = {r["project"]: r["gain_points"] for r in ok if r["variant"] == "default"}
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in ok if r["variant"] == variant]
        gains = [r["gain_points"] for r in mine]
        s: dict[str, Any] = {"projects": len(mine), "failed": sum(1 for r in rows if r["variant"] == variant) - len(mine)}
        if gains:
            s.update(mean_gain=sum(gains) / len(gains), worst_gain=min(gains),
                     losers=[r["project"] for r in mine if r["gain_points"] < 0],
                     beyond_noise=sum(1 for r in mine if r["beyond_noise"] and r["gain_points"] > 0),
                     mean_loss_change=sum(r["loss_after"] / r["loss_before"] - 1 for r in mine) / len(mine))
            paired = [r["gain_points"] - base[r["project"]] for r in mine if r["project"] in base]
            if variant != "default" and paired:
                s["vs_default"] = sum(paired) / len(paired)
        out[variant] = s
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--projects", default=",".join(DEFAULT_PROJECTS),
                   help=f"comma-separated names from the pinned list (default: {','.join(DEFAULT_PROJECTS)})")
    p.add_argument("--budget-min", type=float, default=DEFAULT_TIME_BUDGET_S / 60,
                   help="each run's time budget in minutes (default: the product's)")
    p.add_argument("--variant", action="append", choices=sorted(VARIANTS),
                   help="a lever's set of flags; repeat to compare (default: default)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (each gets the cores / jobs threads)")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "codeassist-bench" / "finetune",
                   help="archives, unpacked projects, and the runs' data folder")
    p.add_argument("--json", type=Path, default=None, help="write the rows and the summary here")
    args = p.parse_args(argv)
    _check_unseen()
    by_key = {x.key: x for x in PROJECTS}
    wanted = [normalize(x) for x in args.projects.split(",") if x.strip()]
    unknown = [x for x in wanted if x not in by_key]
    if unknown:
        p.error(f"not on the benchmark's list: {', '.join(unknown)} (choose from {', '.join(by_key)})")
    variants = args.variant or ["default"]
    runs: list[Run] = []
    sizes: dict[str, float] = {}
    for key in wanted:
        pin = by_key[key]
        folder = unpack(fetch(args.cache / "archives", pin), args.cache / "projects", pin)
        sizes[key] = py_megabytes(folder)
        runs += [Run(pin, folder, v, VARIANTS[v]) for v in variants]
    home = args.cache / "home"
    threads = max(1, (os.cpu_count() or 2) // args.jobs) if args.jobs > 1 else None
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{len(runs)} runs ({len(wanted)} projects x {len(variants)} variants), {args.budget_min:g} minutes "
          f"each, {args.jobs} at a time", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        reports = list(pool.map(lambda r: train(r, home, args.budget_min, threads, args.cache / "logs"), runs))
    rows = [row(r, sizes[r.project.key], rep) for r, rep in zip(runs, reports, strict=True)]
    summ = summary(rows)
    command = "benchmarks/bench_finetune.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"\n{command}  (started {started})\n")
    print(table(rows))
    print()
    for variant, s in summ.items():
        if "mean_gain" not in s:
            print(f"{variant}: every run failed")
            continue
        line = (f"{variant}: mean gain {s['mean_gain']:+.1f} points over {s['projects']} projects, worst "
                f"{s['worst_gain']:+.1f}, {s['beyond_noise']} gains beyond noise, held-out loss "
                f"{100 * s['mean_loss_change']:+.1f}% on average")
        if "vs_default" in s:
            line += f"; {s['vs_default']:+.1f} points against default on the same projects"
        print(line + (f"; {s['failed']} failed" if s["failed"] else ""))
    out = args.json or args.cache / "results" / f"finetune-{started.replace(':', '')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": command, "started": started, "budget_min": args.budget_min,
                               "rows": rows, "summary": summ}, indent=1))
    print(f"\nJSON: {out}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
