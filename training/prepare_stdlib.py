"""`python -m codeassist.training.prepare_stdlib OUT_DIR`: shards for the default model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codeassist.training.shards import write_manifest, write_split
from codeassist.training.stdlib import VAL_FRACTION, split_documents, stdlib_documents, stdlib_root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    train, val = split_documents(stdlib_documents())
    entries = {
        "train": write_split(train, args.out, "train", seed=args.seed, workers=args.workers, progress=True),
        # validation without FIM, so its loss is plain left-to-right perplexity on held-out files
        "val": write_split(val, args.out, "val", seed=args.seed, fim_rate=0.0, workers=args.workers),
    }
    write_manifest(args.out, entries, {"source": f"python{sys.version_info.major}.{sys.version_info.minor} "
                                       f"standard library ({stdlib_root()})", "val_fraction": VAL_FRACTION,
                                       "seed": args.seed})
    for name, e in entries.items():
        print(f"{name}: {e['documents']} files, {e['tokens']:,} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
