"""The repository-level eval: line cases from a real repository, a workspace copy with every
target line cut, and the 20-line copy heuristic that any completion model has to beat.

The cases are evaluation.lines.choose_cases (lines across the repository's source files,
deterministic for a seed); `make_workspace` copies the repository with each target line cut at its cursor (so no file holds
an answer) and commits it as a git repository, as a user's workspace; `copy_heuristic` proposes
the rest of the line that most often followed the longest text before the cursor seen elsewhere.
`evaluate_repo` runs the real server once per configuration on the same cases (harness.py) and
scores the heuristic beside it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codeassist.evaluation import harness
from codeassist.evaluation.lines import RepoCase, choose_cases, cut_texts
from codeassist.evaluation.report import Report, Sample, score
from codeassist.model.sources import BINARY_PROBE, is_secret_filename, list_candidates

log = logging.getLogger(__name__)

# The server's settings per configuration, sent as initializationOptions {"codeassist": {...}}.
CONFIGS: dict[str, dict[str, Any]] = {
    "off": {"copy": False, "context": {"repository": False}},
    "on": {"copy": True, "context": {"repository": True}},
    "copy": {"copy": True, "context": {"repository": False}},
    "repo": {"copy": False, "context": {"repository": True}},
}
HEURISTIC_ROWS = ("copy heuristic (document)", "copy heuristic (document + repository)")
MIN_KEY, MAX_KEY = 6, 120  # characters of text before the cursor the heuristic matches
_NOT_SOURCE = frozenset({".md", ".txt"})  # languages the harness knows that are prose
_GIT_ENV = {"GIT_AUTHOR_NAME": "codeassist eval", "GIT_AUTHOR_EMAIL": "eval@codeassist.invalid",
            "GIT_COMMITTER_NAME": "codeassist eval", "GIT_COMMITTER_EMAIL": "eval@codeassist.invalid",
            "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
            "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}  # no user hooks or signing


@dataclass(frozen=True)
class RepoResult:
    repo: str
    files: int  # source files the cases were drawn from
    rows: dict[str, Report]  # configuration or heuristic -> its report


def _read_text(path: Path) -> str | None:
    """The file's text, or None for a symlink, a binary or a file that is not UTF-8."""
    if path.is_symlink() or not path.is_file() or path.stat().st_size > harness.MAX_FILE_BYTES:
        return None
    data = path.read_bytes()
    if b"\0" in data[:BINARY_PROBE]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def source_texts(root: Path) -> dict[str, str]:
    """rel path -> text of the repository's source files, in sorted order (the collector's scope)."""
    out: dict[str, str] = {}
    for rel in list_candidates(root):
        suffix = Path(rel).suffix
        if suffix not in harness.LANGUAGES or suffix in _NOT_SOURCE or is_secret_filename(rel):
            continue
        text = _read_text(root / rel)
        if text is not None:
            out[rel] = text
    return out


def make_workspace(root: Path, dest: Path, cut: Mapping[str, str]) -> dict[str, str]:
    """Copy the repository's files (git's list inside git; no binaries, symlinks or secret files)
    into `dest`, the files of `cut` replaced by their cut text, and commit it as a git repository.
    Returns rel path -> text of every UTF-8 file of up to 1 MiB in the copy."""
    copied: dict[str, str] = {}
    for rel in list_candidates(root):
        src = root / rel
        if is_secret_filename(rel) or src.is_symlink() or not src.is_file():
            continue
        data = cut[rel].encode("utf-8") if rel in cut else src.read_bytes()
        if b"\0" in data[:BINARY_PROBE]:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if len(data) <= harness.MAX_FILE_BYTES:
            with contextlib.suppress(UnicodeDecodeError):
                copied[rel] = data.decode("utf-8")
    env = {**os.environ, **_GIT_ENV}
    for args in (["init", "-q"], ["add", "--all"], ["commit", "-q", "--no-verify", "-m", "codeassist eval workspace"]):
        subprocess.run(["git", "-C", str(dest), *args], env=env, check=True, capture_output=True, timeout=300)
    return copied


def _followers(corpus: str, key: str, cursor_end: int) -> list[str]:
    """Non-empty rests of line after each occurrence of `key` in `corpus`, in order, except the
    occurrence that ends at the cursor. Files in the corpus are separated by NUL."""
    out = []
    p = corpus.find(key)
    while p >= 0:
        end = p + len(key)
        if end != cursor_end:
            nl, nul = corpus.find("\n", end), corpus.find("\0", end)
            stop = min(x for x in (nl, nul, len(corpus)) if x >= 0)
            rest = corpus[end:stop].rstrip()
            if rest:
                out.append(rest)
        p = corpus.find(key, p + 1)
    return out


def copy_heuristic(doc: str, offset: int, others: Sequence[str] = ()) -> str:
    """The most frequent rest of line (ties: the first found; the document before other files)
    that followed the longest text before the cursor (120 down to 6 characters, across lines)
    also found elsewhere; "" when none is."""
    corpus = doc + "".join("\0" + t for t in others)
    before = doc[:offset]
    lo, hi = MIN_KEY, min(MAX_KEY, len(before))
    best: list[str] = []
    # A longer match implies its suffix matches one character later with the same rest of
    # line, so "some rest of line follows a k-character match" is monotone in k: bisect it.
    while lo <= hi:
        mid = (lo + hi) // 2
        found = _followers(corpus, before[-mid:], offset)
        if found:
            best, lo = found, mid + 1
        else:
            hi = mid - 1
    if not best:
        return ""
    counts = Counter(best)
    return max(counts, key=lambda rest: counts[rest])  # max keeps the first of equal counts


def case_offset(text: str, case: RepoCase) -> int:
    lines = text.split("\n")
    return sum(len(ln) + 1 for ln in lines[:case.line]) + case.col


def heuristic_reports(cases: Sequence[RepoCase], copied: Mapping[str, str]) -> dict[str, Report]:
    """The copy heuristic on exactly the eval's cases, over the cut workspace copy."""
    rows = {name: Report() for name in HEURISTIC_ROWS}
    for case in cases:
        doc = copied[case.path]
        others = [copied[rel] for rel in sorted(copied) if rel != case.path]
        for name, files in zip(HEURISTIC_ROWS, ([], others), strict=True):
            t0 = time.perf_counter()
            predicted = copy_heuristic(doc, case_offset(doc, case), files)
            ms = (time.perf_counter() - t0) * 1e3
            rows[name].cases.append(Sample(case.path, case.line, case.col, case.expected, predicted, ms))
    for report in rows.values():
        score(report)
    return rows


async def evaluate_repo(root: Path, samples: int, seed: int, configs: Sequence[str], cmd: list[str],
                        settings: Mapping[str, Any]) -> RepoResult:
    """Every configuration (a fresh server each) and the heuristic on the same cut workspace."""
    texts = source_texts(root)
    cases = choose_cases(texts, samples, seed)
    if not cases:
        raise ValueError(f"no source lines to evaluate in {root}")
    with tempfile.TemporaryDirectory(prefix="codeassist-eval-") as tmp:
        workspace = Path(tmp) / root.resolve().name
        copied = make_workspace(root, workspace, cut_texts(texts, cases))
        rows: dict[str, Report] = {}
        for name in configs:
            options = {"codeassist": {**settings, **CONFIGS[name]}}
            log.info("%s: %d cases, configuration %s", root, len(cases), name)
            rows[name] = await harness.evaluate_workspace(workspace, cases, copied, cmd, options)
        rows.update(heuristic_reports(cases, copied))
    return RepoResult(str(root), len(texts), rows)


# -- the table ---------------------------------------------------------------------------------

_COLUMNS = ("exact", "edit sim", "empty", "stray ws", "p50 ms", "p95 ms", "ready s", "index s", "index ms",
            "index MB", "RSS MB")


def row_figures(report: Report) -> dict[str, float | None]:
    """The table's figures for one row (None: not measured, e.g. the heuristic has no server)."""
    index = report.status.get("index")
    index = index if isinstance(index, dict) else {}
    served = bool(report.status)
    return {"exact": report.exact_match, "edit sim": report.edit_similarity, "empty": report.empty_rate,
            "stray ws": report.stray_whitespace_rate, "p50 ms": report.p50_ms, "p95 ms": report.p95_ms,
            "ready s": report.ready_s if served else None, "index s": report.index_ready_s,
            "index ms": index.get("buildMs"), "index MB": index.get("memoryMB"),
            "RSS MB": report.rss_mb if served else None}


def mean_figures(results: Sequence[RepoResult]) -> dict[str, dict[str, float | None]]:
    """Row name -> the mean of each figure over the repositories that measured it."""
    out: dict[str, dict[str, float | None]] = {}
    for name in results[0].rows if results else ():
        per_repo = [row_figures(r.rows[name]) for r in results if name in r.rows]
        out[name] = {}
        for col in _COLUMNS:
            values = [f[col] for f in per_repo if f[col] is not None]
            out[name][col] = round(sum(v for v in values if v is not None) / len(values), 4) if values else None
    return out


def format_table(title: str, rows: Mapping[str, Mapping[str, float | None]]) -> str:
    def cell(col: str, v: float | None) -> str:
        if v is None:
            return "-"
        return f"{v:.1%}" if col in ("exact", "empty", "stray ws") else f"{v:.3f}" if col == "edit sim" else f"{v:.1f}"

    width = max(len(n) for n in rows) if rows else 6
    lines = [title, f"{'':<{width}}  " + "  ".join(f"{c:>9}" for c in _COLUMNS)]
    lines += [f"{name:<{width}}  " + "  ".join(f"{cell(c, fig.get(c)):>9}" for c in _COLUMNS)
              for name, fig in rows.items()]
    return "\n".join(lines)
