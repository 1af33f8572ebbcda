from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from codeassist.model.tokenizer import FIM_MIDDLE_ID, decode, encode
from codeassist.training.collect import SourceFile, collect
from codeassist.training.dataset import (
    FIM_PASS_CHARS,
    MAX_FIM_PASSES,
    build_dataset,
    fim_passes,
    read_dataset,
    read_val_files,
    split_files,
)
from codeassist.training.shards import load_split, read_manifest

from .fixtures import SECRET_CODE, SECRETS, code_file, init_repo, write


def _windows(secret: str, width: int = 10) -> set[str]:
    return {secret[i:i + width] for i in range(0, max(1, len(secret) - width + 1))}


def _contains_subsequence(tokens: np.ndarray, needle: list[int]) -> bool:
    n = len(needle)
    first = np.flatnonzero(tokens[: len(tokens) - n + 1] == needle[0])
    return any(tokens[i:i + n].tolist() == needle for i in first)


def _fixture_repo(tmp_path: Path) -> Path:
    repo = init_repo(tmp_path / "proj")
    write(repo / "settings.py", SECRET_CODE)
    write(repo / "deploy.yaml", "db:\n  user: app\n  password: Tr0ub4dor&3xample\n")
    write(repo / ".env", "AWS_SECRET=should-never-be-read\n")
    for i in range(8):
        write(repo / "pkg" / f"mod{i}.py", code_file(i) + ("" if i % 3 else SECRET_CODE))
    return repo


def test_planted_secrets_have_zero_hits_in_the_shards(tmp_path: Path) -> None:
    repo = _fixture_repo(tmp_path)
    result = collect([repo])
    ds = build_dataset(result.files, tmp_path / "data", workers=1)
    assert ds.train_files >= 1 and ds.val_files >= 1
    for fim_rate in (0.5, 0.0):  # with FIM (as trained) and without (a secret is never split)
        folder = tmp_path / f"data-{fim_rate}"
        build_dataset(result.files, folder, workers=1, fim_rate=fim_rate)
        for split in ("train", "val"):
            tokens = np.asarray(load_split(folder, split))
            text = decode(tokens.tolist())
            for secret in (*SECRETS, "should-never-be-read"):
                assert not any(w in text for w in _windows(secret)), secret
                assert not _contains_subsequence(tokens, encode(secret)), secret
            raw = (folder / f"{split}.bin").read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in raw
        val_json = (folder / "val_files.jsonl").read_text()
        assert not any(s in val_json for s in SECRETS)
    train_text = decode(np.asarray(load_split(tmp_path / "data-0.0", "train")).tolist())
    assert "<PASSWORD>" in train_text + decode(np.asarray(load_split(tmp_path / "data-0.0", "val")).tolist())


def test_dataset_is_deterministic_with_hashes_and_fim(tmp_path: Path) -> None:
    files = collect([_fixture_repo(tmp_path)]).files
    a = build_dataset(files, tmp_path / "a", workers=2, seed=3)
    b = build_dataset(files, tmp_path / "b", workers=1, seed=3)
    assert a.data_id == b.data_id
    for split in ("train", "val"):
        assert (tmp_path / "a" / f"{split}.bin").read_bytes() == (tmp_path / "b" / f"{split}.bin").read_bytes()
    m = read_manifest(tmp_path / "a")
    digest = hashlib.sha256((tmp_path / "a" / "train.bin").read_bytes()).hexdigest()
    assert m["splits"]["train"]["sha256"] == digest  # type: ignore[index]
    assert read_dataset(tmp_path / "a") == a.__class__(**{**a.__dict__})
    assert FIM_MIDDLE_ID in np.asarray(load_split(tmp_path / "a", "train"))  # FIM samples present
    assert FIM_MIDDLE_ID not in np.asarray(load_split(tmp_path / "a", "val"))  # held out plain
    c = build_dataset(files, tmp_path / "c", workers=1, seed=4)
    assert c.data_id != a.data_id  # another seed: other FIM cuts, another identity
    held_out = {f.path for f in read_val_files(tmp_path / "a")}
    assert held_out and held_out.isdisjoint(json.loads(json.dumps(m["splits"]["train"]["files"])))  # type: ignore[index]


def test_split_holds_out_at_least_one_file(tmp_path: Path) -> None:
    files = collect([_fixture_repo(tmp_path)]).files[:2]
    train, val = split_files(files, val_fraction=0.0)
    assert len(train) == 1 and len(val) == 1
    assert split_files(files, 0.0) == (train, val)


def test_a_small_project_gets_several_fim_passes_each_with_its_own_spans(tmp_path: Path) -> None:
    files = collect([_fixture_repo(tmp_path)]).files
    one = build_dataset(files, tmp_path / "one", workers=1, passes=1)
    auto = build_dataset(files, tmp_path / "auto", workers=2)  # a tiny project: the most passes
    assert read_manifest(tmp_path / "auto")["splits"]["train"]["passes"] == MAX_FIM_PASSES  # type: ignore[index]
    first = np.asarray(load_split(tmp_path / "one", "train"))
    every = np.asarray(load_split(tmp_path / "auto", "train"))
    assert np.array_equal(every[:len(first)], first)  # pass 0 is the single-pass split
    assert len(every) > (MAX_FIM_PASSES - 1) * len(first)  # eight passes of the same files
    assert auto.data_id != one.data_id and auto.val_tokens == one.val_tokens
    # the FIM samples differ between passes: not every pass repeats pass 0's middles
    assert not np.array_equal(every[len(first):2 * len(first)], first)
    assert fim_passes(files, fim_rate=0.0) == 1
    big = [SourceFile(path="a.py", language="python", text="x = 1\n" * (FIM_PASS_CHARS // 6 + 1))]
    assert fim_passes(big) == 1
