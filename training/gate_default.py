"""`python -m codeassist.training.gate_default NEW [OLD]`: may NEW replace the embedded default model?

The same gate `codeassist train` applies to a user's model (training/gate.py), on the standard
library's held-out files (training/stdlib.py: 5% of the files, chosen by a hash of the path,
never trained on): held-out loss on the validation shard, and line exact match through the
language server's pipeline. OLD defaults to the shipped model. Exit status 0 when NEW is
better, 1 when it is not.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from codeassist.model.store import resolve_model
from codeassist.training.collect import SourceFile
from codeassist.training.gate import run_gate
from codeassist.training.shards import load_split
from codeassist.training.stdlib import split_documents, stdlib_documents


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("new", type=Path)
    ap.add_argument("old", nargs="?", default="default", help="a model name or path (default: the shipped one)")
    ap.add_argument("--data", type=Path, default=Path("data/stdlib"), help="prepare_stdlib's output")
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    old_path, _ = resolve_model(args.old)
    _, val = split_documents(stdlib_documents())
    files = [SourceFile(path=d.path, language="python", text=d.text) for d in val]
    result = run_gate(args.new, old_path, load_split(args.data, "val"), files, lines=args.lines)
    print(result.summary)
    return 0 if result.better else 1


if __name__ == "__main__":
    sys.exit(main())
