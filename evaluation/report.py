"""What an evaluation of the real server reports: the cases it asked, and their figures.

A case is scored on the first line of the first suggestion against the removed rest of the line:
exact match, edit similarity, how often nothing was suggested, and how often a suggestion starts
with whitespace the code lacks; with the latency of each request, how long the model and the
workspace index took to be ready, and the server's resident memory with its children.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codeassist.lsp.pipeline import percentile

__all__ = ["Report", "Sample", "TypingReport", "edit_similarity", "has_stray_whitespace",
           "process_tree_rss_mb", "score"]


@dataclass(frozen=True)
class Sample:
    path: str
    line: int
    col: int
    expected: str  # the blanked rest of the line
    predicted: str  # the first line of the suggestion
    latency_ms: float


class _PerCase:
    """to_dict: the figures, with the per-case list (`_per_case`) only when asked for."""

    _per_case = "cases"

    def to_dict(self, with_cases: bool = False) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]
        if not with_cases:
            d.pop(self._per_case)
        return dict(d)


@dataclass
class Report(_PerCase):
    samples: int = 0
    exact_match: float = 0.0
    edit_similarity: float = 0.0
    empty_rate: float = 0.0
    stray_whitespace_rate: float = 0.0  # of non-empty suggestions: leading whitespace the code lacks
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    ready_s: float = 0.0  # initialize -> the model is ready
    index_ready_s: float | None = None  # initialize -> the workspace index is ready (None: no index)
    rss_mb: float = 0.0  # the server's resident memory with its children, after the run
    status: dict[str, Any] = field(default_factory=dict)
    cases: list[Sample] = field(default_factory=list)


@dataclass
class TypingReport(_PerCase):
    _per_case = "latencies_ms"
    keystrokes: int = 0
    answered: int = 0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    mean_ms: float = 0.0
    empty_rate: float = 0.0
    cache_hits: int = 0
    ready_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)


def edit_similarity(a: str, b: str) -> float:
    if not a and not b:
        return 1.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return 1.0 - prev[-1] / max(len(a), len(b))


def has_stray_whitespace(predicted: str, expected: str) -> bool:
    return predicted[:1].isspace() and not expected[:1].isspace()


def score(report: Report) -> None:
    """Fill the report's metrics from its cases."""
    cases = report.cases
    report.samples = len(cases)
    if not cases:
        return
    report.exact_match = round(sum(c.predicted == c.expected for c in cases) / len(cases), 4)
    report.edit_similarity = round(sum(edit_similarity(c.predicted, c.expected) for c in cases) / len(cases), 4)
    report.empty_rate = round(sum(not c.predicted for c in cases) / len(cases), 4)
    answered = [c for c in cases if c.predicted]
    stray = sum(has_stray_whitespace(c.predicted, c.expected) for c in answered)
    report.stray_whitespace_rate = round(stray / len(answered), 4) if answered else 0.0
    lat = [c.latency_ms for c in cases]
    report.p50_ms, report.p95_ms = round(percentile(lat, 0.5), 2), round(percentile(lat, 0.95), 2)


def process_tree_rss_mb(pid: int) -> float:
    """VmRSS of a process and all its descendants, from /proc (0.0 where /proc is missing)."""
    total_kb, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        total_kb += next((int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS:")), 0)
    return round(total_kb / 1024, 1)
