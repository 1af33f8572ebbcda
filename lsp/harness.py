"""The headless harness: drive the real server over stdio exactly as an editor does, and score it.

`evaluate` blanks the rest of sampled lines and asks for an inline completion at the cursor;
`evaluate_workspace` does the same for the cut line cases of a repository copy opened as the
server's workspace (repo_eval.py); `type_file` types a stretch of a file character by character
with human pauses and asks for a completion after every keystroke.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codeassist.lsp.client import LspClient, LspError
from codeassist.lsp.pipeline import percentile

if TYPE_CHECKING:
    from codeassist.lsp.repo_eval import LineCase

log = logging.getLogger(__name__)

LANGUAGES = {".py": "python", ".js": "javascript", ".ts": "typescript", ".go": "go", ".rs": "rust",
             ".c": "c", ".h": "c", ".cpp": "cpp", ".java": "java", ".rb": "ruby", ".sh": "shellscript",
             ".lua": "lua", ".md": "markdown", ".txt": "plaintext"}
MAX_FILE_BYTES = 1 << 20
INDEX_TIMEOUT_S = 120.0  # the workspace index must be ready within this, or the eval goes on without


@dataclass(frozen=True)
class Sample:
    path: str
    line: int
    col: int
    expected: str  # the blanked rest of the line
    predicted: str  # the first line of the suggestion
    latency_ms: float


@dataclass
class Report:
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

    def to_dict(self, with_cases: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_cases:
            d.pop("cases")
        return d


@dataclass
class TypingReport:
    keystrokes: int = 0
    answered: int = 0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    mean_ms: float = 0.0
    empty_rate: float = 0.0
    cache_hits: int = 0
    ready_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    def to_dict(self, with_cases: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not with_cases:
            d.pop("latencies_ms")
        return d


def server_command(model: str | None = None, device: str | None = None, backend: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "codeassist.cli.main", "lsp", "--stdio"]
    for flag, value in (("--model", model), ("--device", device), ("--backend", backend)):
        if value:
            cmd += [flag, value]
    return cmd


def collect_files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        found = sorted(p.rglob("*")) if p.is_dir() else [p]
        out += [f for f in found if f.is_file() and f.suffix in LANGUAGES and f.stat().st_size <= MAX_FILE_BYTES]
    return out


def sample_positions(text: str, n: int, rng: random.Random) -> list[tuple[int, int]]:
    """(line, col) with col inside the line's code, so at least one character is blanked."""
    lines = text.split("\n")
    candidates = [i for i, ln in enumerate(lines) if len(ln.strip()) >= 2]
    picks = rng.sample(candidates, min(n, len(candidates)))
    out = []
    for i in sorted(picks):
        line = lines[i].rstrip()
        indent = len(line) - len(line.lstrip())
        out.append((i, rng.randrange(indent, len(line))))
    return out


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


async def _initialize(client: LspClient, options: dict[str, Any], workspace: Path | None) -> None:
    if workspace is None:
        await client.initialize(options)
        return
    uri = _uri(workspace)
    await client.request("initialize", {
        "processId": None, "rootUri": uri, "workspaceFolders": [{"uri": uri, "name": workspace.name}],
        "capabilities": {"textDocument": {"inlineCompletion": {}}}, "initializationOptions": options})
    client.notify("initialized", {})


async def wait_index(client: LspClient, timeout: float = INDEX_TIMEOUT_S) -> bool:
    """Poll codeassist/status until its `index` is ready. False when the server has no index
    (a server without repository support) or it is not ready within `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        index = (await client.request("codeassist/status", {})).get("index")
        if not isinstance(index, dict):
            return False
        if index.get("ready"):
            return True
        if asyncio.get_running_loop().time() > deadline:
            log.warning("the workspace index was not ready after %.0f s; evaluating without waiting", timeout)
            return False
        await asyncio.sleep(0.2)


async def _start(cmd: list[str], options: dict[str, Any], workspace: Path | None = None
                 ) -> tuple[LspClient, float]:
    client = await LspClient.start(cmd)
    t0 = time.perf_counter()
    await _initialize(client, options, workspace)
    status = await client.wait_ready()
    if not status.get("ready"):
        await client.close()
        raise RuntimeError(f"the server is not ready: {status.get('lastReason')}")
    return client, time.perf_counter() - t0


def _uri(path: Path) -> str:
    return path.resolve().as_uri()


async def ask_line(client: LspClient, uri: str, line: int, character: int) -> tuple[str, float]:
    """(the first line of the first suggestion, rstripped; the request's milliseconds), asked as
    invoked: scored without the typing time budget."""
    t0 = time.perf_counter()
    result = await client.request("textDocument/inlineCompletion", {
        "textDocument": {"uri": uri}, "position": {"line": line, "character": character},
        "context": {"triggerKind": 1}})
    ms = (time.perf_counter() - t0) * 1e3
    items = (result or {}).get("items") or []
    return (items[0]["insertText"].split("\n", 1)[0].rstrip() if items else ""), ms


async def evaluate(files: list[Path], samples: int, cmd: list[str], options: dict[str, Any] | None = None,
                   seed: int = 0) -> Report:
    rng = random.Random(seed)
    texts = [(f, f.read_text(encoding="utf-8", errors="replace")) for f in files]
    per_file = max(1, -(-samples // max(1, len(texts))))
    client, ready_s = await _start(cmd, options or {})
    report = Report(ready_s=round(ready_s, 2))
    try:
        version = 1
        for path, text in texts:
            uri = _uri(path)
            language = LANGUAGES.get(path.suffix, "plaintext")
            client.notify("textDocument/didOpen", {"textDocument": {
                "uri": uri, "languageId": language, "version": version, "text": text}})
            lines = text.split("\n")
            for line, col in sample_positions(text, per_file, rng):
                if report.samples >= samples:
                    break
                blanked = "\n".join([*lines[:line], lines[line][:col], *lines[line + 1:]])
                version += 1
                client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                         "contentChanges": [{"text": blanked}]})
                predicted, ms = await ask_line(client, uri, line, col)
                report.cases.append(Sample(str(path), line, col, lines[line][col:].rstrip(), predicted, ms))
                report.samples += 1
            client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        report.status = await client.request("codeassist/status", {})
        report.rss_mb = process_tree_rss_mb(client.proc.pid)
    finally:
        await client.close()
    score(report)
    return report


async def evaluate_workspace(workspace: Path, cases: Sequence[LineCase], docs: Mapping[str, str],
                             cmd: list[str], options: dict[str, Any] | None = None) -> Report:
    """Start the server on `workspace` (the cut repository copy), wait for its index, and ask for
    an invoked inline completion at each case's cursor in its document (`docs`: rel path -> text)."""
    t0 = time.perf_counter()
    client, ready_s = await _start(cmd, options or {}, workspace)
    report = Report(ready_s=round(ready_s, 2))
    try:
        if await wait_index(client):
            report.index_ready_s = round(time.perf_counter() - t0, 2)
        for case in cases:
            path, text = workspace / case.path, docs[case.path]
            uri = _uri(path)
            client.notify("textDocument/didOpen", {"textDocument": {
                "uri": uri, "languageId": LANGUAGES.get(path.suffix, "plaintext"), "version": 1, "text": text}})
            line = text.split("\n")[case.line]
            try:
                predicted, ms = await ask_line(client, uri, case.line, len(line[:case.col].encode("utf-16-le")) // 2)
            except LspError as exc:  # scored as no suggestion, as an editor shows none
                log.warning("%s:%d: %s", case.path, case.line + 1, exc)
                predicted, ms = "", 0.0
            client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
            report.cases.append(Sample(case.path, case.line, case.col, case.expected, predicted, ms))
        report.status = await client.request("codeassist/status", {})
        report.rss_mb = process_tree_rss_mb(client.proc.pid)
    finally:
        await client.close()
    score(report)
    return report


async def type_file(path: Path, cmd: list[str], options: dict[str, Any] | None = None, chars: int = 400,
                    start_line: int | None = None, seed: int = 0, pause_ms: tuple[float, float] = (40, 160)
                    ) -> TypingReport:
    """Remove `chars` characters of the file from a line start on, then type them back one at a
    time, asking for an inline completion after each keystroke (as an editor with ghost text)."""
    rng = random.Random(seed)
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    if start_line is None:
        start_line = min(len(lines) - 1, max(0, len(lines) // 3))
    start = sum(len(ln) + 1 for ln in lines[:start_line])
    end = text.find("\n", start + chars)
    typed = text[start:len(text) if end < 0 else end + 1]  # whole lines: the cursor never sits in a word
    doc = text[:start] + text[start + len(typed):]
    uri = _uri(path)
    client, ready_s = await _start(cmd, options or {})
    report = TypingReport(ready_s=round(ready_s, 2))
    empty = 0
    try:
        client.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": LANGUAGES.get(path.suffix, "plaintext"), "version": 1, "text": doc}})
        line, col = start_line, 0
        for i, ch in enumerate(typed):
            client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": i + 2}, "contentChanges": [
                {"range": {"start": {"line": line, "character": col}, "end": {"line": line, "character": col}},
                 "text": ch}]})
            line, col = (line + 1, 0) if ch == "\n" else (line, col + len(ch.encode("utf-16-le")) // 2)
            t0 = time.perf_counter()
            try:
                result = await client.request("textDocument/inlineCompletion", {
                    "textDocument": {"uri": uri}, "position": {"line": line, "character": col},
                    "context": {"triggerKind": 2}})
            except LspError:
                continue
            report.latencies_ms.append((time.perf_counter() - t0) * 1e3)
            empty += not (result or {}).get("items")
            report.keystrokes += 1
            await asyncio.sleep(rng.uniform(*pause_ms) / 1000)
        status = await client.request("codeassist/status", {})
        report.cache_hits = int(status.get("cacheHits") or 0)
    finally:
        await client.close()
    lat = report.latencies_ms
    report.answered = len(lat)
    report.keystrokes = len(typed)
    if lat:
        report.p50_ms, report.p95_ms = round(percentile(lat, 0.5), 2), round(percentile(lat, 0.95), 2)
        report.mean_ms = round(sum(lat) / len(lat), 2)
        report.empty_rate = round(empty / len(lat), 4)
    return report
