"""The default model's corpus: the Python standard library of the running interpreter.

Only the standard library folder is read; site-packages (and dist-packages) never are.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from codeassist.training.shards import Document, is_validation

VAL_FRACTION = 0.05
MAX_FILE_BYTES = 1 << 20


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"]).resolve()


def stdlib_documents(root: Path | None = None) -> list[Document]:
    root = root or stdlib_root()
    docs = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root)
        if rel.parts[0] in ("site-packages", "dist-packages") or p.is_symlink():
            continue
        try:
            if p.stat().st_size > MAX_FILE_BYTES:
                continue
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if text.strip():
            docs.append(Document(path=rel.as_posix(), text=text))
    return docs


def split_documents(docs: list[Document], val_fraction: float = VAL_FRACTION
                    ) -> tuple[list[Document], list[Document]]:
    train = [d for d in docs if not is_validation(d.path, val_fraction)]
    val = [d for d in docs if is_validation(d.path, val_fraction)]
    return train, val
