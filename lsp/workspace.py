"""The workspace index: the user's own code, for copy candidates at the cursor.

Built in a background thread when the server learns its workspace folders. It reads exactly
the files the training collector would take (`git ls-files -co --exclude-standard` inside git;
secret files by name are never opened; vendored, build, binary, minified and oversized files
are skipped: one rule set, model/sources.py), tokenizes them, and keeps a `CopyIndex` of at
most MAX_TOKENS tokens (16 bytes each), so a monorepo costs a bounded time and memory.

Three layers answer a lookup, so nothing is stale and nothing is counted twice:
- the base index of the files on disk, with the spans of open or changed files masked out;
- an overlay of the other open documents (their live text) and of files saved or changed on
  disk since the build, rebuilt when one of them changes;
- the current document itself, as the text before the cursor's line and the text after it
  (the cursor's own line never answers itself), kept while the user types on one line.

Every layer is in the model's tokenizer (`tokenizer`): when the model loads with another one
than the index was built with (an open model's tokenizer.json), `set_tokenizer` rebuilds it.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from codeassist.lsp.context import Snippet
from codeassist.model.copy import KEY, Candidate, CopyIndex, find_candidates, find_in_text
from codeassist.model.sources import MAX_BYTES, content_rule, list_candidates, scope_rule, stat_rule
from codeassist.model.sources import Candidate as Scoped
from codeassist.model.tokenization import Tokenizer, resolve

log = logging.getLogger(__name__)

MAX_TOKENS = 4_000_000  # 64 MB of index (16 bytes a token); about 200 MB at the peak of a build
MAX_FILES = 50_000
CHUNK_TOKENS = 128  # retrieved snippets: windows of about a dozen lines
MAX_VOTERS = 200  # a query n-gram found more often than this says nothing about where to look

DocumentSource = Callable[[], dict[str, tuple[str, int, str]]]  # uri -> (path, version, text)


@dataclass(frozen=True)
class IndexStats:
    ready: bool
    files: int = 0
    tokens: int = 0
    bytes: int = 0
    build_ms: float = 0.0
    memory_mb: float = 0.0
    truncated: bool = False  # the workspace holds more than MAX_TOKENS or MAX_FILES
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"ready": self.ready, "files": self.files, "tokens": self.tokens, "bytes": self.bytes,
                "buildMs": round(self.build_ms, 1), "memoryMB": round(self.memory_mb, 1),
                "truncated": self.truncated, "error": self.error}


def workspace_files(root: Path) -> Iterable[Path]:
    """The files in scope under `root`, by the training collector's rules (nothing is opened)."""
    root_real = os.path.realpath(root)
    for rel in list_candidates(root):
        c = Scoped(str(root), rel)
        if scope_rule(c, None) is None and stat_rule(c, root_real)[0] is None:
            yield Path(c.full)


def read_source(path: Path) -> str | None:
    """The file's text, or None when the collector's content rules drop it (binary, minified...)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_BYTES or content_rule(data) is not None:
        return None
    return data.decode("utf-8")


class WorkspaceIndex:
    def __init__(self, documents: DocumentSource, max_tokens: int = MAX_TOKENS,
                 tokenizer: Tokenizer | None = None) -> None:
        self.documents = documents
        self.max_tokens = max_tokens
        self.tokenizer = resolve(tokenizer)
        self.roots: tuple[Path, ...] = ()
        self._stats = IndexStats(ready=False)
        self._base: CopyIndex | None = None
        self._spans: dict[str, tuple[int, int]] = {}  # path -> token span in the base
        self._dead: np.ndarray | None = None
        self._masked: set[str] = set()  # paths whose base span is masked out now
        self._changed: dict[str, list[int]] = {}  # path -> tokens of files changed on disk since
        self._overlay: tuple[tuple[object, ...], CopyIndex] | None = None
        self._doc: tuple[tuple[object, ...], CopyIndex] | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # -- building --------------------------------------------------------------------------------

    def start(self, roots: Iterable[Path]) -> None:
        """Index these folders in the background (once; later calls with other roots rebuild)."""
        roots = tuple(r for r in roots if r.is_dir())
        if not roots or roots == self.roots:
            return
        self.roots = roots
        self._thread = threading.Thread(target=self._build, name="codeassist-index", daemon=True)
        self._thread.start()

    def set_tokenizer(self, tokenizer: Tokenizer) -> None:
        """Index in `tokenizer` from now on: forget what was indexed in another one and rebuild
        the folders in the background (the model loaded with its own tokenizer)."""
        if tokenizer is self.tokenizer:
            return
        with self._lock:  # a build in progress drops its result when it sees the new tokenizer
            self.tokenizer = tokenizer
            self._base, self._spans, self._dead, self._masked = None, {}, None, set()
            self._changed, self._overlay, self._doc = {}, None, None
        roots, self.roots = self.roots, ()
        self._stats = IndexStats(ready=False)
        if roots:
            self.start(roots)

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
        return self._stats.ready

    def _build(self) -> None:
        t0 = time.perf_counter()
        segments: list[np.ndarray] = []  # int32 at once: Python ints would cost 36 bytes a token
        spans: dict[str, tuple[int, int]] = {}
        n = nbytes = 0
        truncated = False
        tk = self.tokenizer
        try:
            for root in self.roots:
                for path in workspace_files(root):
                    if n >= self.max_tokens or len(spans) >= MAX_FILES:
                        truncated = True
                        break
                    text = read_source(path)
                    if text is None:
                        continue
                    ids = np.asarray(tk.encode(text)[:self.max_tokens - n], dtype=np.int32)
                    spans[os.path.realpath(path)] = (n + len(segments), n + len(segments) + len(ids))  # + separators
                    segments.append(ids)
                    n += len(ids)
                    nbytes += len(text)
            base = CopyIndex(segments, tk)
        except Exception as exc:  # a broken workspace must not take the server down
            log.error("the workspace index could not be built: %s", exc)
            self._stats = IndexStats(ready=True, error=f"the workspace could not be indexed ({exc})")
            return
        with self._lock:
            if tk is not self.tokenizer:
                return  # set_tokenizer came first; its own build follows
            self._base, self._spans = base, spans
            self._dead = np.zeros(base.n_tokens, dtype=bool)
            self._masked = set()
        self._stats = IndexStats(ready=True, files=len(spans), tokens=n, bytes=nbytes,
                                 build_ms=(time.perf_counter() - t0) * 1e3, memory_mb=base.nbytes / 2**20,
                                 truncated=truncated)
        log.info("indexed %d files, %d tokens in %.0f ms", len(spans), n, self._stats.build_ms)

    def stats(self) -> IndexStats:
        return self._stats

    # -- keeping it current ----------------------------------------------------------------------

    def file_changed(self, path: str) -> None:
        """A file was saved, created or changed on disk: read it again (deleted: forget it)."""
        if not self._stats.ready or not any(Path(path).is_relative_to(r) for r in self.roots):
            return
        text = read_source(Path(path)) if os.path.isfile(path) else None
        path = os.path.realpath(path)
        with self._lock:
            self._changed[path] = self.tokenizer.encode(text) if text is not None else []
            self._overlay = None

    # -- lookup ------------------------------------------------------------------------------------

    def candidates(self, uri: str, cursor: int, context: list[int], forced: str, limit: int = 3,
                   typed: list[int] | None = None) -> list[Candidate]:
        """Copy candidates for the cursor at code-point offset `cursor` of open document `uri`
        (`context`, `forced`, `typed`: see model/copy.py find_candidates)."""
        docs = self.documents()
        current = docs.get(uri)
        if current is None:
            return []
        indexes: list[tuple[CopyIndex, np.ndarray | None]] = [(self._document_index(uri, current, cursor), None)]
        with self._lock:
            if self._base is not None and self._dead is not None:
                self._mask({p for p, _, _ in docs.values()} | set(self._changed))
                indexes.append((self._base, self._dead))
            indexes.append((self._overlay_index(uri, docs), None))
        found = find_candidates(indexes, context, forced, limit, typed or (), self.tokenizer)
        in_text = find_in_text(current[2], cursor, forced, limit)
        # the longer match wins, then the more frequent rest: the copy heuristic's order
        merged = sorted([*in_text, *found], key=lambda c: (-c.match_chars, -c.count))
        unique: dict[str, Candidate] = {}
        for c in merged:
            unique.setdefault(c.text, c)
        return list(unique.values())[:limit]

    def snippets(self, uri: str, query: str, limit: int) -> tuple[Snippet, ...]:
        """Chunks of other files most like `query` (the lines above the cursor), best first.

        Each KEY-gram of the query's tokens votes for the chunks it occurs in, weighted by its
        rarity (BM25's idea on token n-grams); common n-grams are skipped. The open documents'
        disk copies are masked out, as for copy candidates.
        """
        ids = self.tokenizer.encode(query)
        with self._lock:
            base, dead = self._base, self._dead
            if base is None or dead is None or limit <= 0 or len(ids) < KEY:
                return ()
            self._mask({p for p, _, _ in self.documents().values()} | set(self._changed))
            votes: dict[int, float] = {}
            for i in range(KEY, len(ids) + 1):
                ends = base.occurrences(ids[i - KEY:i], MAX_VOTERS)
                ends = ends[~dead[ends - 1]] if len(ends) else ends
                weight = 1.0 / math.log2(2 + len(ends))
                for chunk in set((ends // CHUNK_TOKENS).tolist()):
                    votes[chunk] = votes.get(chunk, 0.0) + weight
            best = sorted(votes.items(), key=lambda kv: -kv[1])[:limit]
            return tuple(s for s in (self._chunk_snippet(base, c, v) for c, v in best) if s is not None)

    def _chunk_snippet(self, base: CopyIndex, chunk: int, score: float) -> Snippet | None:
        start, end = chunk * CHUNK_TOKENS, (chunk + 1) * CHUNK_TOKENS
        for path, (a, b) in self._spans.items():  # a linear scan over at most MAX_FILES spans
            if a <= start < b or a < end <= b:
                text = base.tokenizer.decode([int(t) for t in base.tokens[max(a, start):min(b, end)]])
                lines = text.split("\n")  # whole lines only: a cut line at either end goes
                body = "\n".join(lines[start > a:len(lines) - (end < b)]).strip("\n")
                rel = next((os.path.relpath(path, r) for r in self.roots if path.startswith(str(r))), path)
                return Snippet(path=rel, text=body, score=score) if body.strip() else None
        return None

    def _document_index(self, uri: str, doc: tuple[str, int, str], cursor: int) -> CopyIndex:
        text = doc[2]
        start = text.rfind("\n", 0, cursor) + 1
        end = text.find("\n", cursor)
        end = len(text) if end < 0 else end
        before, after = text[:start], text[end:]
        key = (uri, hash(before), hash(after))
        if self._doc is None or self._doc[0] != key:
            tk = self.tokenizer
            self._doc = (key, CopyIndex([tk.encode(before), tk.encode(after)], tk))
        return self._doc[1]

    def _overlay_index(self, uri: str, docs: dict[str, tuple[str, int, str]]) -> CopyIndex:
        others = tuple(sorted((u, v) for u, (_, v, _) in docs.items() if u != uri))
        key: tuple[object, ...] = others  # a file changed on disk resets self._overlay (file_changed)
        if self._overlay is None or self._overlay[0] != key:
            open_paths = {p for p, _, _ in docs.values()}
            segments = [self.tokenizer.encode(docs[u][2]) for u, _ in others]
            segments += [t for p, t in self._changed.items() if p not in open_paths]
            self._overlay = (key, CopyIndex(segments, self.tokenizer))
        return self._overlay[1]

    def _mask(self, paths: set[str]) -> None:
        """Mask the base spans of exactly these paths (open or changed), unmask the rest."""
        assert self._dead is not None
        for p in paths ^ self._masked:
            span = self._spans.get(p)
            if span is not None:
                self._dead[span[0]:span[1]] = p in paths
        self._masked = set(paths)
