"""`python -m codeassist.training.corpus build OUT_DIR`: the default model's corpus (v3).

The Python standard library plus the Python source of a fixed list of PyPI packages at pinned
versions (`PACKAGES`), each fetched once, at data-preparation time, with `pip download --no-deps`
(the wheel; the sdist only where no wheel exists) into OUT_DIR/archives. Nothing else is read:
an archive in that folder that is not on the list is never opened, so other packages stay out of
training and evaluations on them stay honest.

A package is kept only when its metadata (`License-Expression`, else its `License ::`
classifiers, else `License`) names MIT, BSD, Apache-2.0, PSF or ISC. From a kept package the .py
files are read, vendored copies of other packages skipped, and each file is filtered and
redacted by the code `codeassist train` uses (collect.content_rule, redaction.redact); that is
corpus_sources.py, one package or the standard library at a time. Here the whole corpus,
standard library first, is deduplicated exactly and nearly (dedup.deduplicate).
Held-out files are chosen by a hash of their path ("<package>/<path>"; the standard library
keeps stdlib.py's split, the one gate_default evaluates on). Shards are written by
shards.write_split; manifest.json records each package and a `corpus_id`, the sha256 of the
rest of the manifest.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from codeassist.training.corpus_sources import (
    PackageSource,
    Pin,
    fetch_archive,
    find_archive,
    normalize,
    read_package,
    stdlib_sources,
)
from codeassist.training.dedup import deduplicate
from codeassist.training.fim import FIM_RATE
from codeassist.training.shards import MANIFEST, Document, is_validation, write_manifest, write_split
from codeassist.training.stdlib import VAL_FRACTION, split_documents, stdlib_root

log = logging.getLogger(__name__)


# The list, pinned to the newest release PyPI offered on 2026-12-01.
PACKAGES: tuple[Pin, ...] = tuple(Pin(n, v) for n, v in (
    ("django", "5.2.19"), ("flask", "3.1.3"), ("sqlalchemy", "2.1.9"), ("alembic", "1.20.1"),
    ("fastapi", "0.165.0"), ("pydantic", "2.14.4"), ("marshmallow", "4.4.0"), ("celery", "5.7.0"),
    ("kombu", "5.7.0"), ("tornado", "6.6.1"), ("aiohttp", "3.14.5"), ("twisted", "26.10.0"),
    ("scrapy", "2.19.0"), ("pytest", "9.2.0"), ("pluggy", "1.7.0"), ("setuptools", "84.2.1"), ("pip", "26.3"),
    ("black", "26.10.1"), ("mypy", "2.4.1"), ("isort", "9.0.2"), ("coverage", "7.17.5"), ("sphinx", "9.0.4"),
    ("babel", "2.19.0"), ("pyyaml", "6.0.4"), ("tomlkit", "0.15.2"), ("python-dateutil", "4.0.0"),
    ("arrow", "1.4.0"), ("more-itertools", "11.2.1"), ("toolz", "1.2.0"), ("dask", "2026.8.0"),
    ("xarray", "2026.9.0"), ("scikit-learn", "1.9.1"), ("pandas", "3.1.1"), ("numpy", "2.4.6"),
    ("scipy", "1.17.1"), ("sympy", "1.14.0"), ("statsmodels", "0.15.0"), ("jsonschema", "4.26.0"),
    ("boto3", "1.44.8"), ("rich", "15.0.0"), ("typer", "0.29.2"), ("cryptography", "50.0.2"), ("pyasn1", "0.6.5"),
))
STDLIB = "stdlib"  # the standard library's name in the manifest


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _concat(parts: list[Path], out: Path) -> str:
    h = hashlib.sha256()
    with open(out.with_suffix(".bin.tmp"), "wb") as f:
        for p in parts:
            data = p.read_bytes()
            f.write(data)
            h.update(data)
    out.with_suffix(".bin.tmp").replace(out)
    return h.hexdigest()


def build_corpus(out_dir: Path, pins: tuple[Pin, ...] = PACKAGES, archives: Path | None = None,
                 stdlib: Path | None = None, seed: int = 0, workers: int = 1, fetch: bool = True
                 ) -> dict[str, Any]:
    """Write OUT_DIR/{train,val}.bin and the manifest; returns the manifest.

    `archives` (default OUT_DIR/archives) is searched for each pin's archive only; a missing one is
    downloaded when `fetch`, else an error. `stdlib` is the standard library folder (None: none).
    """
    archives = archives or out_dir / "archives"
    sources: list[PackageSource] = []
    for pin in pins:
        path = find_archive(archives, pin) if archives.is_dir() else None
        if path is None:
            if not fetch:
                raise FileNotFoundError(f"no archive of {pin.name} {pin.version} in {archives}")
            path = fetch_archive(archives, pin)
        sources.append(read_package(pin, path))
        log.info("%s %s: %s, %d files", pin.name, pin.version, sources[-1].licence, len(sources[-1].documents))
    groups: list[tuple[str, list[Document], Counter[str]]] = []
    if stdlib is not None:
        groups.append((STDLIB, *stdlib_sources(stdlib)))
    groups += [(s.pin.key, s.documents, s.dropped) for s in sources if s.allowed]
    flat = [(g, d) for g, (_, docs, _) in enumerate(groups) for d in docs]
    dd = deduplicate([d.text for _, d in flat])  # standard library first: its files are never the ones dropped
    kept: list[list[Document]] = [[] for _ in groups]
    for i in dd.exact:
        groups[flat[i][0]][2]["exact duplicate"] += 1
    for i in dd.near:
        groups[flat[i][0]][2]["near duplicate"] += 1
    for i in dd.keep:
        kept[flat[i][0]].append(flat[i][1])
    parts_dir = out_dir / "parts"
    shutil.rmtree(parts_dir, ignore_errors=True)
    stats: dict[str, dict[str, Any]] = {}
    parts: dict[str, list[Path]] = {"train": [], "val": []}
    counts: dict[str, Counter[str]] = {"train": Counter(), "val": Counter()}
    files: dict[str, list[str]] = {"train": [], "val": []}
    for (name, _, dropped), docs in zip(groups, kept, strict=True):
        if name == STDLIB:
            train, val = split_documents(docs)
        else:
            train = [d for d in docs if not is_validation(d.path, VAL_FRACTION)]
            val = [d for d in docs if is_validation(d.path, VAL_FRACTION)]
        entry: dict[str, Any] = {"files": len(docs), "characters": sum(len(d.text) for d in docs),
                                 "dropped": dict(sorted(dropped.items()))}
        for split, split_docs in (("train", train), ("val", val)):
            # validation without FIM, so its loss is plain left-to-right perplexity on held-out files
            e = write_split(split_docs, parts_dir, f"{split}-{name}", seed=seed, workers=workers,
                            fim_rate=0.0 if split == "val" else FIM_RATE)
            parts[split].append(parts_dir / str(e["file"]))
            counts[split].update({"tokens": int(str(e["tokens"])), "documents": len(split_docs)})
            files[split] += [d.path if name != STDLIB else f"{STDLIB}/{d.path}" for d in split_docs]
            entry[f"{split}_files"] = len(split_docs)
            entry[f"{split}_tokens"] = e["tokens"]
        entry["tokens"] = entry["train_tokens"] + entry["val_tokens"]
        stats[name] = entry
    splits = {split: {"file": f"{split}.bin", "sha256": _concat(parts[split], out_dir / f"{split}.bin"),
                      "tokens": counts[split]["tokens"], "documents": counts[split]["documents"], "passes": 1,
                      "files": sorted(files[split])} for split in ("train", "val")}
    shutil.rmtree(parts_dir, ignore_errors=True)
    packages = []
    for s in sources:
        p: dict[str, Any] = {"name": s.pin.name, "version": s.pin.version, "licence": s.licence,
                             "archive": s.archive.name, "sha256": sha256_file(s.archive)}
        if s.allowed:
            p.update(stats[s.pin.key])
        else:
            p["refused"] = f"refused: licence {s.licence}"
        packages.append(p)
    extra: dict[str, Any] = {
        "format": "codeassist-corpus", "seed": seed, "val_fraction": VAL_FRACTION,
        "source": f"python{sys.version_info.major}.{sys.version_info.minor} standard library and "
                  f"{sum(s.allowed for s in sources)} PyPI packages (codeassist.training.corpus)",
        "stdlib": stats.get(STDLIB), "packages": packages,
    }
    extra["corpus_id"] = corpus_id({"splits": splits, **extra})
    write_manifest(out_dir, splits, extra)
    return {"splits": splits, **extra}


def corpus_id(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's contents without the id itself (first 16 hex digits)."""
    body = {k: v for k, v in manifest.items() if k != "corpus_id"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def format_summary(manifest: dict[str, Any]) -> str:
    total = sum(int(s["tokens"]) for s in manifest["splits"].values())
    rows = ([{"name": STDLIB, "version": "", "licence": "PSF", **manifest["stdlib"]}] if manifest["stdlib"] else [])
    lines = [f"corpus {manifest['corpus_id']}: {total:,} tokens "
             f"(train {manifest['splits']['train']['tokens']:,}, val {manifest['splits']['val']['tokens']:,})"]
    for p in rows + manifest["packages"]:
        if "refused" in p:
            lines.append(f"  {p['name']:<16} {p['version']:<12} {p['refused']}")
        else:
            lines.append(f"  {p['name']:<16} {p['version']:<12} {p['files']:>6,} files {p['tokens']:>12,} tokens "
                         f"{100 * p['tokens'] / max(1, total):5.1f}%  {p['licence'][:40]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="fetch the pinned archives (once) and write shards and manifest")
    b.add_argument("out", type=Path)
    b.add_argument("--packages", nargs="+", default=None, help="a subset of the pinned list, by name")
    b.add_argument("--archives", type=Path, default=None, help="where the archives are (default OUT/archives)")
    b.add_argument("--no-stdlib", action="store_true")
    b.add_argument("--offline", action="store_true", help="never download; a missing archive is an error")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    pins = PACKAGES
    if args.packages:
        by_key = {p.key: p for p in PACKAGES}
        unknown = sorted({normalize(n) for n in args.packages} - set(by_key))
        if unknown:
            ap.error(f"not on the corpus list: {', '.join(unknown)}")
        wanted = {normalize(n) for n in args.packages}
        pins = tuple(p for p in PACKAGES if p.key in wanted)
    try:
        manifest = build_corpus(args.out, pins, archives=args.archives,
                                stdlib=None if args.no_stdlib else stdlib_root(), seed=args.seed,
                                workers=args.workers, fetch=not args.offline)
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(manifest))
    print(f"manifest: {args.out / MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
