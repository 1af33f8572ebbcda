"""`python -m codeassist.training.corpus build OUT_DIR`: the default model's corpus (v3).

The Python standard library plus the Python source of a fixed list of PyPI packages at pinned
versions (`PACKAGES`), each fetched once, at data-preparation time, with `pip download --no-deps`
(the wheel; the sdist only where no wheel exists) into OUT_DIR/archives. Nothing else is read:
an archive in that folder that is not on the list is never opened, so other packages stay out of
training and evaluations on them stay honest.

A package is kept only when its metadata (`License-Expression`, else its `License ::`
classifiers, else `License`) names MIT, BSD, Apache-2.0, PSF or ISC. From a kept package the .py
files are read, vendored copies of other packages skipped, and each file is filtered and
redacted by the code `codeassist train` uses (collect.content_rule, redaction.redact); then the
whole corpus, standard library first, is deduplicated exactly and nearly (dedup.deduplicate).
Held-out files are chosen by a hash of their path ("<package>/<path>"; the standard library
keeps stdlib.py's split, the one gate_default evaluates on). Shards are written by
shards.write_split; manifest.json records each package and a `corpus_id`, the sha256 of the
rest of the manifest.
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

from codeassist.training.collect import MAX_BYTES, content_rule
from codeassist.training.dedup import deduplicate
from codeassist.training.fim import FIM_RATE
from codeassist.training.redaction import is_secret_filename, redact
from codeassist.training.shards import MANIFEST, Document, is_validation, write_manifest, write_split
from codeassist.training.stdlib import VAL_FRACTION, split_documents, stdlib_documents, stdlib_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pin:
    name: str
    version: str

    @property
    def key(self) -> str:  # PEP 503 normalized name
        return normalize(self.name)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


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
ALLOWED_LICENCES = ("MIT", "BSD", "Apache-2.0", "PSF", "ISC")
VENDORED_DIRS = frozenset({"_vendor", "vendored", "externals", "_vendored"})
STDLIB = "stdlib"  # the standard library's name in the manifest

# licence names (SPDX ids, classifier names, free text) -> the family on the list
_LICENCE_FAMILIES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(rx, re.IGNORECASE), fam) for rx, fam in (
    (r"mit( license)?", "MIT"),
    (r"0bsd|bsd|bsd[- ]\d[- ]clause( \w+)*( license)?|(new |modified |simplified |revised )?bsd( license)?", "BSD"),
    (r"apache([- ]2(\.0)?| software license| license,? (version )?2(\.0)?)", "Apache-2.0"),
    (r"psf(-2\.0)?|python-2\.0|python software foundation license", "PSF"),
    (r"isc( license)?( \(iscl\))?", "ISC"),
))


def licence_family(name: str) -> str | None:
    """The allowed family ("MIT", "BSD", ...) that this one licence name denotes, or None."""
    name = re.sub(r"\s+", " ", name.strip().rstrip("."))
    return next((fam for rx, fam in _LICENCE_FAMILIES if rx.fullmatch(name)), None)


def _expression_allows(expr: str) -> bool:
    """An SPDX expression: allowed when one OR-alternative has only allowed AND-terms."""
    flat = re.sub(r"[()]", " ", expr)
    return any(all(licence_family(re.split(r"\s+WITH\s+", term)[0]) for term in re.split(r"\s+AND\s+", alt))
               for alt in re.split(r"\s+OR\s+", flat))


def licence_of(meta: Message) -> tuple[str, bool]:
    """(licence as the metadata states it, whether it is on the list)."""
    expr = meta.get("License-Expression")
    if expr and expr.strip():
        return expr.strip(), _expression_allows(expr)
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::") and c.count("::") >= 2]
    if classifiers:  # several classifiers: each must be allowed (they may be parts, not choices)
        return " / ".join(classifiers), all(licence_family(c) for c in classifiers)
    text = (meta.get("License") or "").strip()
    first = text.splitlines()[0].strip() if text else ""
    if not first or first.upper() == "UNKNOWN":
        return "unknown", False
    first = first[:80]
    return first, licence_family(re.sub(r"\s+license$", "", first, flags=re.IGNORECASE)) is not None \
        or licence_family(first) is not None


# ---- archives ---------------------------------------------------------------------------------

def archive_pin(filename: str) -> tuple[str, str] | None:
    """(normalized name, version) of a wheel or sdist file name, or None for anything else."""
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        return (normalize(parts[0]), parts[1]) if len(parts) >= 5 else None
    for ext in (".tar.gz", ".zip"):
        if filename.endswith(ext):
            stem = filename[: -len(ext)]
            if "-" in stem:
                name, version = stem.rsplit("-", 1)
                return normalize(name), version
    return None


def find_archive(archives: Path, pin: Pin) -> Path | None:
    """The pinned archive in `archives`: a wheel if there is one, else the sdist."""
    found = sorted(p for p in archives.glob("*") if archive_pin(p.name) == (pin.key, pin.version))
    wheels = [p for p in found if p.suffix == ".whl"]
    return (wheels or found)[0] if found else None


def fetch_archive(archives: Path, pin: Pin) -> Path:
    """Download the pinned wheel (or, when the release has none, its sdist) into `archives`."""
    archives.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(archives),
            f"{pin.name}=={pin.version}"]
    if subprocess.run([*base, "--only-binary", ":all:"], check=False).returncode != 0:
        subprocess.run([*base, "--no-binary", ":all:"], check=True)
    path = find_archive(archives, pin)
    if path is None:
        raise FileNotFoundError(f"pip downloaded no archive for {pin.name} {pin.version}")
    return path


def _members(archive: Path) -> list[tuple[str, bytes | None]]:
    """(name, bytes or None for a file too large) of the regular files in a wheel or sdist."""
    out: list[tuple[str, bytes | None]] = []
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                if not info.is_dir():
                    out.append((info.filename, z.read(info) if info.file_size <= MAX_BYTES else None))
    else:
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                f = t.extractfile(m) if m.isreg() else None
                if f is not None:
                    out.append((m.name, f.read() if m.size <= MAX_BYTES else None))
    return out


def read_metadata(archive: Path) -> Message:
    """The core metadata: a wheel's *.dist-info/METADATA, an sdist's top-level PKG-INFO."""
    for name, data in _members(archive):
        parts = name.split("/")
        if data is not None and ((len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA")
                                 or (archive.suffix != ".whl" and len(parts) == 2 and parts[1] == "PKG-INFO")):
            return email.parser.Parser().parsestr(data.decode("utf-8", errors="replace"))
    return Message()


def is_vendored(path: str) -> bool:
    return any(part in VENDORED_DIRS for part in path.split("/")[:-1])


def clean_source(data: bytes | None) -> tuple[str | None, str]:
    """(rule that drops the file, or None; the redacted text): the filters `codeassist train` uses."""
    if data is None or len(data) > MAX_BYTES:
        return "oversized", ""
    rule = content_rule(data)
    if rule is not None:
        return rule, ""
    text, _ = redact(data.decode("utf-8"))
    return None, text


@dataclass
class PackageSource:
    pin: Pin
    archive: Path
    licence: str
    allowed: bool
    documents: list[Document] = field(default_factory=list)  # paths "<name>/<path>"
    dropped: Counter[str] = field(default_factory=Counter)


def read_package(pin: Pin, archive: Path) -> PackageSource:
    """The package's licence and, when it is allowed, its cleaned .py files in path order."""
    licence, allowed = licence_of(read_metadata(archive))
    src = PackageSource(pin, archive, licence, allowed)
    if not allowed:
        return src
    sdist = archive.suffix != ".whl"
    for name, data in sorted(_members(archive), key=lambda m: m[0]):
        rel = name.split("/", 1)[1] if sdist and "/" in name else name  # an sdist's top folder
        if not rel.endswith(".py"):
            continue
        if is_vendored(rel):
            src.dropped["vendored"] += 1
            continue
        if is_secret_filename(rel):
            src.dropped["secret file"] += 1
            continue
        rule, text = clean_source(data)
        if rule is not None:
            src.dropped[rule] += 1
            continue
        src.documents.append(Document(path=f"{pin.key}/{rel}", text=text))
    return src


# ---- the build --------------------------------------------------------------------------------

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stdlib_sources(root: Path) -> tuple[list[Document], Counter[str]]:
    """The standard library's files (stdlib.py's paths, so its held-out split is kept), cleaned."""
    docs, dropped = [], Counter[str]()
    for d in stdlib_documents(root):
        rule, text = clean_source(d.text.encode("utf-8"))
        if rule is not None:
            dropped[rule] += 1
        else:
            docs.append(Document(path=d.path, text=text))
    return docs, dropped


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
