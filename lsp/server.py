"""The language server: thin handlers that parse, call the pipeline, and convert.

The only module that touches lsprotocol types. The logic lives in context.py, pipeline.py and
backends.py; the hardened transport in framing.py, protocol.py and transport.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from lsprotocol import types
from pygls.exceptions import FeatureRequestError
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from codeassist.lsp.backends import Backend, make_backend
from codeassist.lsp.context import Snippet, build_context, cursor_offset, index_to_units
from codeassist.lsp.pipeline import Completion, Pipeline
from codeassist.lsp.prompt import warm_up_prompts
from codeassist.lsp.protocol import HardenedProtocol
from codeassist.lsp.resources import HeapTrimmer
from codeassist.lsp.settings import Settings, parse_settings
from codeassist.lsp.snippets import query_lines, rank_snippets
from codeassist.lsp.transport import (
    Inbox,
    StdoutWriter,
    StreamWriterAdapter,
    pump_messages,
    pump_stream,
    start_stdin_pump,
    watch_process,
)
from codeassist.lsp.workspace import WorkspaceIndex

log = logging.getLogger(__name__)

STATUS_METHOD = "codeassist/status"
BackendFactory = Callable[[Settings], Backend]


def _version() -> str:
    try:
        return metadata.version("codeassist")
    except metadata.PackageNotFoundError:
        return "0"


def default_backend_factory(settings: Settings) -> Backend:
    """The backend the settings choose; a local model takes the cores that are free before each
    request (LocalBackend)."""
    return make_backend(settings.backend, settings.model, settings.device, settings.remote)


class CodeassistServer(LanguageServer):
    protocol: HardenedProtocol

    def __init__(self, settings: Settings | None = None,
                 backend_factory: BackendFactory = default_backend_factory) -> None:
        super().__init__("codeassist", _version(), protocol_cls=HardenedProtocol,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.settings = settings or Settings()
        self.backend_factory = backend_factory
        self.pipeline = Pipeline(backend_factory(self.settings), self.settings)
        self.index = WorkspaceIndex(self._open_documents)
        self.pipeline.workspace = self.index
        self.inbox: Inbox | None = None
        self.warm: asyncio.Future[None] | None = None  # tokenizer and prompt tables loading
        self._tasks: set[asyncio.Task[Any]] = set()
        self._snippet_memo: tuple[tuple[Any, ...], tuple[Snippet, ...]] | None = None
        self._real_paths: dict[str, str] = {}  # document path -> realpath, for the open documents
        self.trimmer = HeapTrimmer()  # gives freed memory back once requests pause
        self.protocol.on_exit = lambda code: self.stop()
        _register(self)

    # -- settings and backend ------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """The pipeline's backend (Pipeline.reconfigure replaces it)."""
        return self.pipeline.backend

    def apply_settings(self, raw: Any) -> None:
        new, warnings = parse_settings(raw, self.settings)
        for w in warnings:
            log.warning("%s", w)
        if warnings:
            self.protocol.show_user_message(warnings[0], types.MessageType.Warning)
        self.settings = new
        previous = self.pipeline.reconfigure(new, self.backend_factory)
        if previous is not None:
            self.spawn(previous.aclose())

    def _open_documents(self) -> dict[str, tuple[str, int, str]]:
        docs = self.workspace.text_documents
        real = self._real_paths
        if len(real) > 2 * len(docs) + 16:  # forget closed documents' paths
            real.clear()
        for d in docs.values():
            if d.path not in real:
                real[d.path] = os.path.realpath(d.path)  # a system call per path: once, not per keystroke
        return {uri: (real[d.path], d.version or 0, d.source) for uri, d in docs.items()}

    def index_workspace(self, params: types.InitializeParams) -> None:
        """Start indexing the workspace folders in the background (setting context.repository)."""
        uris = [f.uri for f in params.workspace_folders or ()] or ([params.root_uri] if params.root_uri else [])
        roots = [Path(p) for p in (to_fs_path(u) for u in uris) if p]
        if self.settings.repository and roots:
            self.index.start(roots)

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        if self.inbox is not None:
            self.inbox.put_nowait(None)

    def report_server_error(self, error: Exception, source: Any) -> None:
        log.error("server error: %s", error)
        if source is not FeatureRequestError:
            self.protocol.show_user_message("codeassist: an internal error occurred; the server log has the details.")

    # -- requests ------------------------------------------------------------------------------

    def context_at(self, uri: str, position: types.Position) -> tuple[Any, types.Position] | None:
        """(CompletionContext, the clamped cursor position in client units), or None if disabled."""
        doc = self.workspace.text_documents.get(uri)
        if doc is None:
            self.pipeline.last_reason = "the document is not open (no textDocument/didOpen)"
            return None
        language = doc.language_id or ""
        disabled = self.settings.disabled_reason(language, doc.path)
        if disabled is not None:
            # say why in codeassist/status: "suggestions silently don't appear" is the complaint
            self.pipeline.last_reason = disabled
            return None
        text = doc.source
        encoding = str(self.workspace.position_encoding or "utf-16")
        offset, line = cursor_offset(text, position.line, position.character, encoding)
        line_start = text.rfind("\n", 0, offset) + 1
        clamped = types.Position(line=line, character=index_to_units(text[line_start:offset], offset - line_start, encoding))
        snippets = self._snippets(uri, language, text[max(0, offset - 2000):offset])
        return build_context(uri, language, text, offset, snippets), clamped

    def _snippets(self, uri: str, language: str, before: str) -> tuple[Snippet, ...]:
        """The open files' best windows, then the workspace index's best chunks, for the lines
        above the cursor (stable while the user types on a line, so the KV cache stays valid)."""
        limit = self.settings.open_files
        repository = self.settings.repository and self.index.stats().ready and self.index.roots
        if limit <= 0:
            return ()
        others = [(d.uri, d.version) for u, d in self.workspace.text_documents.items()
                  if u != uri and d.language_id == language]
        if not others and not repository:
            return ()
        query = query_lines(before)
        key = (query, tuple(others), bool(repository))
        if self._snippet_memo is not None and self._snippet_memo[0] == key:
            return self._snippet_memo[1]
        docs = self.workspace.text_documents
        files = [(docs[u].path.rsplit("/", 1)[-1], docs[u].source) for u, _ in others]
        found = rank_snippets(query, files, limit)
        if repository and len(found) < limit:
            found += self.index.snippets(uri, query, limit - len(found))
        self._snippet_memo = (key, found)
        return found

    def status(self) -> dict[str, Any]:
        st = self.backend.status()
        p50 = self.pipeline.latency.percentile(0.5)
        p95 = self.pipeline.latency.percentile(0.95)
        ready = st.ready and (self.warm is None or self.warm.done())
        return {"model": st.model, "backend": st.backend, "device": st.device, "ready": ready,
                "p50Ms": None if p50 is None else round(p50, 2),
                "p95Ms": None if p95 is None else round(p95, 2),
                "lastReason": self.pipeline.last_reason if st.ready else st.reason,
                "cacheHits": self.pipeline.cache.hits, "copiesTaken": self.pipeline.copies_taken,
                "reusedTokens": self.pipeline.last_reused,
                "index": self.index.stats().to_dict() if self.index.roots else None}


def _register(server: CodeassistServer) -> None:
    @server.feature(types.INITIALIZE)
    def initialize(ls: CodeassistServer, params: types.InitializeParams) -> None:
        ls.apply_settings(params.initialization_options)
        ls.index_workspace(params)
        if params.process_id:
            ls.spawn(watch_process(params.process_id, ls.stop))

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: CodeassistServer, params: types.DidSaveTextDocumentParams) -> None:
        path = to_fs_path(params.text_document.uri)
        if path:
            ls.index.file_changed(path)

    @server.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(ls: CodeassistServer, params: types.DidChangeWatchedFilesParams) -> None:
        for change in params.changes:
            path = to_fs_path(change.uri)
            if path:
                ls.index.file_changed(path)

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: CodeassistServer, params: types.DidChangeConfigurationParams) -> None:
        ls.apply_settings(params.settings)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls: CodeassistServer, params: types.InlineCompletionParams
                                ) -> types.InlineCompletionList:
        found = ls.context_at(params.text_document.uri, params.position)
        if found is None:
            return types.InlineCompletionList(items=[])
        ctx, pos = found
        invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        completion = await ls.pipeline.complete(ctx, invoked)
        ls.trimmer.request_done()
        if not completion.text:
            return types.InlineCompletionList(items=[])
        item = types.InlineCompletionItem(insert_text=completion.text, range=types.Range(pos, pos))
        return types.InlineCompletionList(items=[item])

    @server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=[".", "("]))
    async def completion(ls: CodeassistServer, params: types.CompletionParams) -> types.CompletionList:
        found = ls.context_at(params.text_document.uri, params.position)
        if found is None:
            return types.CompletionList(is_incomplete=True, items=[])
        ctx, pos = found
        # a client that sends no context (Neovim 0.7's omnifunc) asked explicitly
        invoked = params.context is None or params.context.trigger_kind == types.CompletionTriggerKind.Invoked
        result = await ls.pipeline.complete(ctx, invoked, channel="classic")
        ls.trimmer.request_done()
        return types.CompletionList(is_incomplete=True, items=_completion_items(ctx.line_prefix, pos, result))

    @server.feature(STATUS_METHOD)
    def status(ls: CodeassistServer, params: Any) -> dict[str, Any]:
        return ls.status()


def _completion_items(line_prefix: str, pos: types.Position, result: Completion) -> list[types.CompletionItem]:
    """A classic list item: replaces the word being typed, so the client's filtering keeps it."""
    if not result.text:
        return []
    word = ""
    for ch in reversed(line_prefix):
        if not (ch.isalnum() or ch == "_"):
            break
        word = ch + word
    start = types.Position(line=pos.line, character=max(0, pos.character - len(word.encode("utf-16-le")) // 2))
    new_text = word + result.text
    label = new_text.split("\n", 1)[0].strip()[:80] or new_text.strip()[:80]
    return [types.CompletionItem(
        label=label, kind=types.CompletionItemKind.Text, detail="codeassist", filter_text=new_text,
        sort_text="0", text_edit=types.TextEdit(range=types.Range(start, pos), new_text=new_text))]


# -- running ---------------------------------------------------------------------------------------

async def _serve(server: CodeassistServer, start_pump: Callable[[Inbox], None]) -> int:
    # The engine thread runs Python between kernels; a short GIL switch interval lets the event
    # loop answer (status, cancels, cache hits) within a millisecond or two of a request arriving.
    sys.setswitchinterval(0.0005)
    server.inbox = asyncio.Queue()
    server.backend.start()  # eager: the model loads while the editor initialises
    server.warm = asyncio.get_running_loop().run_in_executor(None, warm_up_prompts)  # and the tokenizer
    server.spawn(_trim_when_loaded(server))
    start_pump(server.inbox)
    await pump_messages(server.inbox, server.protocol.handle_body, server.protocol.report_bad_input)
    for task in list(server._tasks):
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.backend.aclose(), 1.0)
    code = server.protocol.exit_code
    return code if code is not None else (0 if server.protocol._shutdown else 1)


async def _trim_when_loaded(server: CodeassistServer) -> None:
    """Loading and warming the model frees what it read and packed: give it back."""
    await server.backend.wait_until_ready(600.0)
    if server.warm is not None:
        with contextlib.suppress(Exception):  # a failed warm-up is the first request's to report
            await server.warm
    await asyncio.get_running_loop().run_in_executor(None, server.trimmer.trim_now)


def serve_stdio(server: CodeassistServer) -> int:
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # stdout belongs to the protocol: a stray print must not corrupt it
    server.protocol.set_writer(StdoutWriter(out))
    return asyncio.run(_serve(server, lambda inbox: start_stdin_pump(inbox)))


def serve_tcp(server: CodeassistServer, host: str, port: int) -> int:
    async def main() -> int:
        connected: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.get_running_loop().create_future())

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if connected.done():
                writer.close()  # one editor per server
                return
            connected.set_result((reader, writer))

        tcp = await asyncio.start_server(on_connect, host, port)
        bound = tcp.sockets[0].getsockname()
        log.warning("codeassist language server listening on %s:%s", bound[0], bound[1])
        server.backend.start()
        reader, writer = await connected
        server.protocol.set_writer(StreamWriterAdapter(writer))

        def start(inbox: Inbox) -> None:
            server.spawn(pump_stream(reader, inbox))

        try:
            return await _serve(server, start)
        finally:
            tcp.close()
            writer.close()

    return asyncio.run(main())
