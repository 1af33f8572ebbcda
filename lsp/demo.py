"""`make demo`: start the language server, open a file, ask for an inline completion at its end,
and print the suggestion and its latency, as an editor would see them.

    python -m codeassist.lsp.demo FILE [--model NAME|PATH] [--workspace DIR]

With --workspace the server indexes that folder first, as when an editor opens a project, so the
suggestion can follow the project's own code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path

from codeassist.lsp.client import EditorClient, uri_of
from codeassist.lsp.launch import language_of, server_command


async def demo(path: Path, model: str | None, workspace: Path | None = None) -> int:
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    line, col = len(lines) - 1, len(lines[-1].encode("utf-16-le")) // 2
    t0 = time.perf_counter()
    client = await EditorClient.start(server_command(model))
    try:
        await client.initialize({"codeassist": {}}, workspace=workspace)
        status = await client.wait_ready()
        while workspace is not None and not (status.get("index") or {}).get("ready", True):
            await asyncio.sleep(0.1)
            status = await client.status()
        if not status.get("ready"):
            print(f"the server answers, but the model is not ready: {status.get('lastReason')}")
            return 1
        print(f"server started, model {status.get('model')!r} on {status.get('device')} ready after "
              f"{time.perf_counter() - t0:.1f} s")
        if status.get("index"):
            ix = status["index"]
            print(f"workspace {workspace}: {ix['files']} files, {ix['tokens']} tokens indexed in {ix['buildMs']:.0f} ms")
        uri = uri_of(path)
        client.open(uri, language_of(path.suffix), text)
        t1 = time.perf_counter()
        items = await client.inline(uri, line, col, invoked=True)
        ms = (time.perf_counter() - t1) * 1e3
        status = await client.status()
    finally:
        await client.close()
    print(f"textDocument/inlineCompletion at line {line + 1}, column {col + 1}: {ms:.0f} ms")
    if not items:
        print(f"no suggestion: {status.get('lastReason')}")
        return 0
    suggestion = items[0]
    copied = " (it follows the workspace's own code)" if status.get("copiesTaken") else ""
    print(f"suggestion: {suggestion!r}{copied}")
    print("--- the file with the suggestion accepted ---")
    print(text + suggestion)
    return 0


# `--example DIR`: a small project as a user has one: a helper module already in the repository,
# and a new function being written in another file. The suggestion can follow the project's idiom.
EXAMPLE_FILES = {
    "requirements.py": (
        '"""Reading the requirement files of this project."""\n\n\n'
        "def read_requirements(path):\n"
        '    """Return the requirements in a file, without comments and blank lines."""\n'
        '    with open(path, encoding="utf-8") as f:\n'
        "        lines = f.read().splitlines()\n"
        '    return [line for line in lines if line and not line.startswith("#")]\n'),
    "textio.py": (
        "import os\n\n\n"
        "def read_lines(path):\n"
        '    """Return the lines of a text file."""\n'
        '    with open(path, encoding="utf-8") as f:\n'
        "        "),
}


def write_example(folder: Path) -> Path:
    """Write the example project into `folder`; the path of the file being edited."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in EXAMPLE_FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    with contextlib.suppress(OSError):  # a project of its own, not part of the repository around it
        subprocess.run(["git", "init", "-q", str(folder)], check=False, capture_output=True)
    return folder / "textio.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", type=Path, nargs="?")
    parser.add_argument("--model", default=None)
    parser.add_argument("--workspace", type=Path, default=None, help="the project folder the editor has open")
    parser.add_argument("--example", type=Path, default=None,
                        help="write a small example project into this folder and complete in it")
    args = parser.parse_args()
    if args.example is not None:
        args.file, args.workspace = write_example(args.example), args.example
        print(f"--- {args.example}/requirements.py (already in the project) ---")
        print(EXAMPLE_FILES["requirements.py"])
        print(f"--- {args.file} (being edited; the cursor is at the end) ---")
        print(EXAMPLE_FILES["textio.py"])
    if args.file is None or not args.file.is_file():
        print(f"codeassist demo: error: {args.file} is not a file", file=sys.stderr)
        return 2
    return asyncio.run(demo(args.file, args.model, args.workspace))


if __name__ == "__main__":
    sys.exit(main())
