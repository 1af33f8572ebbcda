"""`make demo`: start the language server, open a file, ask for an inline completion at its end,
and print the suggestion and its latency, as an editor would see them.

    python -m codeassist.lsp.demo FILE [--model NAME|PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from codeassist.lsp.client import LspClient
from codeassist.lsp.harness import LANGUAGES, server_command


async def demo(path: Path, model: str | None) -> int:
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    line, col = len(lines) - 1, len(lines[-1].encode("utf-16-le")) // 2
    t0 = time.perf_counter()
    client = await LspClient.start(server_command(model))
    try:
        await client.initialize({"codeassist": {}})
        status = await client.wait_ready()
        if not status.get("ready"):
            print(f"the server answers, but the model is not ready: {status.get('lastReason')}")
            return 1
        print(f"server started, model {status.get('model')!r} on {status.get('device')} ready after "
              f"{time.perf_counter() - t0:.1f} s")
        uri = path.resolve().as_uri()
        client.notify("textDocument/didOpen", {"textDocument": {
            "uri": uri, "languageId": LANGUAGES.get(path.suffix, "plaintext"), "version": 1, "text": text}})
        t1 = time.perf_counter()
        result = await client.request("textDocument/inlineCompletion", {
            "textDocument": {"uri": uri}, "position": {"line": line, "character": col},
            "context": {"triggerKind": 1}})
        ms = (time.perf_counter() - t1) * 1e3
        items = (result or {}).get("items") or []
        status = await client.request("codeassist/status", {})
    finally:
        await client.close()
    print(f"textDocument/inlineCompletion at line {line + 1}, column {col + 1}: {ms:.0f} ms")
    if not items:
        print(f"no suggestion: {status.get('lastReason')}")
        return 0
    suggestion = items[0]["insertText"]
    print(f"suggestion: {suggestion!r}")
    print("--- the file with the suggestion accepted ---")
    print(text + suggestion)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    if not args.file.is_file():
        print(f"codeassist demo: error: {args.file} is not a file", file=sys.stderr)
        return 2
    return asyncio.run(demo(args.file, args.model))


if __name__ == "__main__":
    sys.exit(main())
