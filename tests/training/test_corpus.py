"""The v3 corpus builder, offline: fake wheels and sdists built in tmp_path, never a download."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from email.message import Message
from pathlib import Path

import pytest

from codeassist.training import corpus
from codeassist.training.corpus import build_corpus
from codeassist.training.corpus_sources import Pin, licence_of, read_package
from codeassist.training.shards import MANIFEST
from tests.training.fixtures import AWS_KEY_ID, AWS_SECRET, GITHUB_TOKEN, SECRET_CODE


def _code(name: str, n: int) -> str:
    """A distinct, ordinary Python module (distinct words, so near-duplicate removal keeps it)."""
    return "".join(f"def {name}_function_{i}(value_{i}, other_{name}_{i}):\n"
                   f"    \"\"\"Return the {name} result number {i}.\"\"\"\n"
                   f"    return value_{i} * {i} + other_{name}_{i}\n\n\n" for i in range(n))


def _metadata(name: str, version: str, licence: dict[str, str | list[str]]) -> str:
    lines = ["Metadata-Version: 2.4", f"Name: {name}", f"Version: {version}"]
    for key, value in licence.items():
        lines += [f"{key}: {v}" for v in ([value] if isinstance(value, str) else value)]
    return "\n".join(lines) + "\n\n"


def make_wheel(folder: Path, name: str, version: str, licence: dict[str, str | list[str]],
               files: dict[str, str]) -> Path:
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for rel, text in sorted(files.items()):
            z.writestr(rel, text)
        z.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", _metadata(name, version, licence))
    return path


def make_sdist(folder: Path, name: str, version: str, licence: dict[str, str | list[str]],
               files: dict[str, str]) -> Path:
    path = folder / f"{name}-{version}.tar.gz"
    entries = {"PKG-INFO": _metadata(name, version, licence), **files}
    with tarfile.open(path, "w:gz") as t:
        for rel, text in sorted(entries.items()):
            data = text.encode()
            info = tarfile.TarInfo(f"{name}-{version}/{rel}")
            info.size, info.mtime = len(data), 0
            t.addfile(info, io.BytesIO(data))
    return path


MIT = {"License-Expression": "MIT"}


@pytest.fixture
def archives(tmp_path: Path) -> Path:
    folder = tmp_path / "archives"
    folder.mkdir()
    make_wheel(folder, "okpkg", "1.0", MIT, {
        "okpkg/__init__.py": _code("okpkg", 6),
        "okpkg/core.py": _code("core", 8),
        "okpkg/settings.py": SECRET_CODE,
        "okpkg/_vendor/six.py": _code("six", 5),
        "okpkg/vendored/attr.py": _code("attr", 5),
        "okpkg/externals/joblib.py": _code("joblib", 5),
        "okpkg/_vendored/idna.py": _code("idna", 5),
        "okpkg/README.txt": "not python",
    })
    make_sdist(folder, "sdistpkg", "2.0", {"Classifier": ["License :: OSI Approved :: BSD License"]},
               {"sdistpkg/main.py": _code("sdistmain", 6), "setup.py": _code("setup", 3)})
    make_wheel(folder, "gplpkg", "3.0", {"License-Expression": "GPL-3.0-only"},
               {"gplpkg/copyleft.py": _code("copyleft", 6)})
    make_wheel(folder, "intruder", "1.0", MIT, {"intruder/mod.py": _code("intruder", 6)})
    return folder


PINS = (Pin("okpkg", "1.0"), Pin("sdistpkg", "2.0"), Pin("gplpkg", "3.0"))


def _build(tmp_path: Path, archives: Path, out: str = "out") -> dict:
    stdlib = tmp_path / "stdlib"
    stdlib.mkdir(exist_ok=True)
    (stdlib / "shutil.py").write_text(_code("shutil", 6))
    return build_corpus(tmp_path / out, PINS, archives=archives, stdlib=stdlib, fetch=False)


def _all_files(manifest: dict) -> list[str]:
    return [f for s in manifest["splits"].values() for f in s["files"]]


def test_a_licence_not_on_the_list_is_refused(tmp_path: Path, archives: Path) -> None:
    manifest = _build(tmp_path, archives)
    by_name = {p["name"]: p for p in manifest["packages"]}
    assert by_name["gplpkg"]["refused"] == "refused: licence GPL-3.0-only"
    assert not any(f.startswith("gplpkg/") for f in _all_files(manifest))
    assert "refused" not in by_name["okpkg"] and by_name["okpkg"]["licence"] == "MIT"
    assert by_name["sdistpkg"]["licence"] == "BSD License" and by_name["sdistpkg"]["files"] == 2


@pytest.mark.parametrize(("fields", "allowed"), [
    ({"License-Expression": "Apache-2.0 OR BSD-3-Clause"}, True),
    ({"License-Expression": "BSD-3-Clause AND 0BSD AND MIT"}, True),
    ({"License-Expression": "BSD-3-Clause AND CC0-1.0"}, False),  # every part must be on the list
    ({"License-Expression": "LGPL-2.1-or-later"}, False),
    ({"Classifier": ["License :: OSI Approved :: BSD License",
                     "License :: OSI Approved :: Apache Software License"]}, True),
    ({"Classifier": ["License :: OSI Approved :: GNU General Public License v2 (GPLv2)"]}, False),
    ({"Classifier": ["License :: OSI Approved :: Python Software Foundation License"]}, True),
    ({"License": "BSD 3-Clause License\n\nCopyright (c) 2008, the authors"}, True),
    ({"License": "ISC"}, True),
    ({"License": "Mozilla Public License 2.0"}, False),
    ({"License": "UNKNOWN"}, False),
    ({}, False),
])
def test_licence_decision(fields: dict[str, str | list[str]], allowed: bool) -> None:
    meta = Message()
    for key, value in fields.items():
        for v in [value] if isinstance(value, str) else value:
            meta[key] = v
    assert licence_of(meta)[1] is allowed


def test_a_package_outside_the_list_is_never_included(tmp_path: Path, archives: Path) -> None:
    manifest = _build(tmp_path, archives)
    assert "intruder" not in {p["name"] for p in manifest["packages"]}
    assert not any(f.startswith("intruder/") for f in _all_files(manifest))
    assert any(f.startswith("okpkg/") for f in _all_files(manifest))
    assert "stdlib/shutil.py" in _all_files(manifest)
    # nor can the command line add one
    with pytest.raises(SystemExit):
        corpus.main(["build", str(tmp_path / "cli"), "--packages", "intruder", "--offline"])


def test_the_build_is_deterministic(tmp_path: Path, archives: Path) -> None:
    first = _build(tmp_path, archives, "a")
    second = _build(tmp_path, archives, "b")
    assert first["corpus_id"] == second["corpus_id"]
    for name in ("train.bin", "val.bin", MANIFEST):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    saved = json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert corpus.corpus_id(saved) == saved["corpus_id"]
    assert first["splits"]["train"]["tokens"] > 0
    assert (tmp_path / "a" / "train.bin").stat().st_size == 2 * first["splits"]["train"]["tokens"]


def test_vendored_folders_are_dropped(tmp_path: Path, archives: Path) -> None:
    src = read_package(Pin("okpkg", "1.0"), archives / "okpkg-1.0-py3-none-any.whl")
    paths = [d.path for d in src.documents]
    assert paths == ["okpkg/okpkg/__init__.py", "okpkg/okpkg/core.py", "okpkg/okpkg/settings.py"]
    assert src.dropped["vendored"] == 4


def test_a_secret_is_redacted(tmp_path: Path, archives: Path) -> None:
    src = read_package(Pin("okpkg", "1.0"), archives / "okpkg-1.0-py3-none-any.whl")
    settings = next(d.text for d in src.documents if d.path.endswith("settings.py"))
    assert "def upload(path):" in settings
    for secret in (AWS_KEY_ID, AWS_SECRET, GITHUB_TOKEN):
        assert secret not in settings


def test_duplicates_across_packages_are_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "archives"
    folder.mkdir()
    shared = _code("shared", 10)
    make_wheel(folder, "first", "1.0", MIT, {"first/a.py": shared, "first/b.py": _code("bee", 6)})
    make_wheel(folder, "second", "1.0", MIT, {"second/a.py": shared, "second/c.py": shared + "# tweak\n"})
    manifest = build_corpus(tmp_path / "out", (Pin("first", "1.0"), Pin("second", "1.0")), archives=folder,
                            fetch=False)
    second = next(p for p in manifest["packages"] if p["name"] == "second")
    assert second["files"] == 0
    assert second["dropped"] == {"exact duplicate": 1, "near duplicate": 1}


def test_find_archive_takes_the_kind_asked_for_else_the_other(tmp_path: Path) -> None:
    # the corpus reads wheels (built code); bench_finetune reads sdists (tests and docs included)
    from codeassist.training.corpus_sources import find_archive

    wheel = tmp_path / "okpkg-1.0-py3-none-any.whl"
    sdist = tmp_path / "okpkg-1.0.tar.gz"
    sdist.write_bytes(b"")
    assert find_archive(tmp_path, Pin("okpkg", "1.0")) == sdist  # no wheel: the sdist
    wheel.write_bytes(b"")
    assert find_archive(tmp_path, Pin("okpkg", "1.0")) == wheel
    assert find_archive(tmp_path, Pin("okpkg", "1.0"), prefer="sdist") == sdist
    assert find_archive(tmp_path, Pin("okpkg", "2.0")) is None
