"""The headless harness: drive the real server over stdio exactly as an editor does, and score it.

`evaluate` blanks the rest of sampled lines and asks for an inline completion at the cursor;
`evaluate_workspace` does the same for the cut line cases of a repository copy opened as the
server's workspace (repo.py); `type_file` types a stretch of a file character by character
with human pauses and asks for a completion after every keystroke. The editor side is pygls's
LanguageClient (lsp/client.py's EditorClient).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from codeassist.evaluation.lines import RepoCase, sample_positions
from codeassist.evaluation.report import Report, Sample, TypingReport, process_tree_rss_mb, score
from codeassist.lsp.client import EditorClient, JsonRpcException, uri_of
from codeassist.lsp.launch import LANGUAGES, language_of, server_command
from codeassist.lsp.pipeline import percentile
from codeassist.model.sources import MAX_BYTES

__all__ = ["LANGUAGES", "MAX_FILE_BYTES", "ask_line", "collect_files", "evaluate", "evaluate_workspace",
           "server_command", "type_file", "wait_index"]

log = logging.getLogger(__name__)

MAX_FILE_BYTES = MAX_BYTES  # the collector's limit (model/sources.py)
INDEX_TIMEOUT_S = 120.0  # the workspace index must be ready within this, or the eval goes on without


def collect_files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        found = sorted(p.rglob("*")) if p.is_dir() else [p]
        out += [f for f in found if f.is_file() and f.suffix in LANGUAGES and f.stat().st_size <= MAX_FILE_BYTES]
    return out


async def wait_index(client: EditorClient, timeout: float = INDEX_TIMEOUT_S) -> bool:
    """Poll codeassist/status until its `index` is ready. False when the server has no index
    (a server without repository support) or it is not ready within `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        index = (await client.status()).get("index")
        if not isinstance(index, dict):
            return False
        if index.get("ready"):
            return True
        if asyncio.get_running_loop().time() > deadline:
            log.warning("the workspace index was not ready after %.0f s; evaluating without waiting", timeout)
            return False
        await asyncio.sleep(0.2)


async def _start(cmd: list[str], options: dict[str, Any], workspace: Path | None = None
                 ) -> tuple[EditorClient, float]:
    client = await EditorClient.start(cmd)
    t0 = time.perf_counter()
    try:
        await client.initialize(options, workspace)
        status = await client.wait_ready()
    except BaseException:
        await client.close()
        raise
    if not status.get("ready"):
        await client.close()
        raise RuntimeError(f"the server is not ready: {status.get('lastReason')}")
    return client, time.perf_counter() - t0


async def ask_line(client: EditorClient, uri: str, line: int, character: int) -> tuple[str, float]:
    """(the first line of the first suggestion, rstripped; the request's milliseconds), asked as
    invoked: scored without the typing time budget."""
    t0 = time.perf_counter()
    texts = await client.inline(uri, line, character, invoked=True)
    ms = (time.perf_counter() - t0) * 1e3
    return (texts[0].split("\n", 1)[0].rstrip() if texts else ""), ms


async def _finish(client: EditorClient, report: Report) -> None:
    report.status = await client.status()
    report.rss_mb = process_tree_rss_mb(client.pid)


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
            uri = uri_of(path)
            client.open(uri, language_of(path.suffix), text, version)
            lines = text.split("\n")
            for line, col in sample_positions(text, per_file, rng):
                if report.samples >= samples:
                    break
                blanked = "\n".join([*lines[:line], lines[line][:col], *lines[line + 1:]])
                version += 1
                client.replace(uri, version, blanked)
                predicted, ms = await ask_line(client, uri, line, col)
                report.cases.append(Sample(str(path), line, col, lines[line][col:].rstrip(), predicted, ms))
                report.samples += 1
            client.close_document(uri)
        await _finish(client, report)
    finally:
        await client.close()
    score(report)
    return report


async def evaluate_workspace(workspace: Path, cases: Sequence[RepoCase], docs: Mapping[str, str],
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
            uri = uri_of(path)
            client.open(uri, language_of(path.suffix), text)
            line = text.split("\n")[case.line]
            try:
                predicted, ms = await ask_line(client, uri, case.line, len(line[:case.col].encode("utf-16-le")) // 2)
            except JsonRpcException as exc:  # scored as no suggestion, as an editor shows none
                log.warning("%s:%d: %s", case.path, case.line + 1, exc)
                predicted, ms = "", 0.0
            client.close_document(uri)
            report.cases.append(Sample(case.path, case.line, case.col, case.expected, predicted, ms))
        await _finish(client, report)
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
    uri = uri_of(path)
    client, ready_s = await _start(cmd, options or {})
    report = TypingReport(ready_s=round(ready_s, 2))
    empty = 0
    try:
        client.open(uri, language_of(path.suffix), text[:start] + text[start + len(typed):])
        line, col = start_line, 0
        for i, ch in enumerate(typed):
            client.insert(uri, i + 2, line, col, ch)
            line, col = (line + 1, 0) if ch == "\n" else (line, col + len(ch.encode("utf-16-le")) // 2)
            t0 = time.perf_counter()
            try:
                texts = await client.inline(uri, line, col, invoked=False)
            except JsonRpcException:
                continue
            report.latencies_ms.append((time.perf_counter() - t0) * 1e3)
            empty += not texts
            report.keystrokes += 1
            await asyncio.sleep(rng.uniform(*pause_ms) / 1000)
        report.cache_hits = int((await client.status()).get("cacheHits") or 0)
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
