"""The corpus's sources, one at a time: a pinned package's archive (found in the archives folder,
else fetched with pip), its licence as its metadata states it and whether that is on the list, and
its .py files, vendored copies skipped, filtered and redacted as `codeassist train` treats a user's
files; the standard library's files the same way.

corpus.py holds the list and builds the corpus from these sources: deduplication across all of
them, the held-out split, shards, manifest and command line. What is here reads one archive or
folder and writes nothing but the archive pip downloads, so the licence decision and the filters
are tested on a fake wheel without a build.
"""

from __future__ import annotations

import email.parser
import re
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path

from codeassist.training.collect import MAX_BYTES, content_rule
from codeassist.training.redaction import is_secret_filename, redact
from codeassist.training.shards import Document
from codeassist.training.stdlib import stdlib_documents


@dataclass(frozen=True)
class Pin:
    name: str
    version: str

    @property
    def key(self) -> str:  # PEP 503 normalized name
        return normalize(self.name)


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


ALLOWED_LICENCES = ("MIT", "BSD", "Apache-2.0", "PSF", "ISC")
VENDORED_DIRS = frozenset({"_vendor", "vendored", "externals", "_vendored"})

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


def find_archive(archives: Path, pin: Pin, prefer: str = "wheel") -> Path | None:
    """The pinned archive in `archives`: of the kind `prefer` says (wheel or sdist) if there is
    one, else the other."""
    found = sorted(p for p in archives.glob("*") if archive_pin(p.name) == (pin.key, pin.version))
    preferred = [p for p in found if (p.suffix == ".whl") == (prefer == "wheel")]
    return (preferred or found)[0] if found else None


def fetch_archive(archives: Path, pin: Pin, prefer: str = "wheel") -> Path:
    """Download the pinned wheel or sdist (`prefer`; the other when the release has none) into `archives`."""
    archives.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(archives),
            f"{pin.name}=={pin.version}"]
    first, other = ("--only-binary", "--no-binary") if prefer == "wheel" else ("--no-binary", "--only-binary")
    if subprocess.run([*base, first, ":all:"], check=False).returncode != 0:
        subprocess.run([*base, other, ":all:"], check=True)
    path = find_archive(archives, pin, prefer)
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
