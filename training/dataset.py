"""Tokenize collected files into token shards: train (with FIM) and held-out validation files.

The shards are in the tokenizer of the model to be trained (ours for our GPT-2 family, an open
family's tokenizer.json for Qwen2, Llama, StarCoder); the data id names that tokenizer (its name
and a hash of its metadata), so a resume against another tokenizer is refused.

The split is by a hash of each file's path, so it is stable across runs and independent of file
order; at least one file is held out when there are two or more. Validation is tokenized without
FIM (its loss is plain left-to-right perplexity) and its cleaned texts are kept in
`val_files.jsonl` for the gate's line-completion test. The manifest holds each shard's sha256
and a `data_id` that a resume checks.

Two optional shards serve the levers against memorisation (issue 20):
- `check`: a few more of the project's files, held out from training and apart from the gate's,
  for early stopping (so the run never chooses its weights on the lines the gate then scores);
- `replay`: general code mixed into training against forgetting: files of the standard library
  (on every user's machine; its training part, never the files gate_default holds out), a seeded
  sample of about replay_ratio / (1 - replay_ratio) times the project's training text.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from codeassist.model.tokenizer import TOKENIZER_NAME
from codeassist.training.collect import SourceFile
from codeassist.training.fim import FIM_RATE
from codeassist.training.shards import (
    Document,
    is_validation,
    read_manifest,
    shard_dtype,
    write_manifest,
    write_split,
)

if TYPE_CHECKING:
    from codeassist.model.tokenization import Tokenizer

VAL_FRACTION = 0.1
NOT_CODE = frozenset({"markdown", "yaml", "toml", "ini", "json", "dockerfile", "make", "cmake"})  # never held out
VAL_FILES = "val_files.jsonl"
# A small project is trained on for many epochs. Its training split is written up to
# MAX_FIM_PASSES times, each with new FIM spans, while the passes together stay under
# FIM_PASS_CHARS of text (about 4M tokens): the spans then vary from epoch to epoch, as they
# would with FIM applied on the fly, and the data stays fixed on disk for an exact resume.
MAX_FIM_PASSES = 8
FIM_PASS_CHARS = 16_000_000
CHECK_FRACTION = 0.05  # of the training files, held out for the early stop's check
MIN_CHECK_FILES = 2
REPLAY_MIN_CHARS = 500_000  # the replay sample: at least this much text (it is read in order and
REPLAY_MAX_CHARS = 6_000_000  # wraps round), at most this much (tokenizing it takes time)


@dataclass(frozen=True)
class Dataset:
    folder: Path
    data_id: str
    train_tokens: int
    val_tokens: int
    train_files: int
    val_files: int
    passes: int = 1  # FIM passes over the training files
    check_tokens: int = 0  # the early stop's check split; 0: none
    replay_tokens: int = 0  # the replay shard; 0: none
    tokenizer: str = TOKENIZER_NAME  # tokenizer_identity of the shards' tokenizer


def _path_hash(path: str) -> int:
    return int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big")


def split_files(files: Sequence[SourceFile], val_fraction: float = VAL_FRACTION
                ) -> tuple[list[SourceFile], list[SourceFile]]:
    """(training files, held-out files). Only code is held out while there are two code files or
    more: the gate completes lines of the held-out files, and a line of docs or configuration says
    nothing of the completions a user gets (itsdangerous's sdist held out docs/encoding.rst alone:
    5 lines of reStructuredText)."""
    code = [f for f in files if f.language not in NOT_CODE]
    _, val = _split_pool(code if len(code) >= 2 else files, val_fraction)
    chosen = {id(f) for f in val}
    return [f for f in files if id(f) not in chosen], val  # the rest, docs and configuration too, in order


def _split_pool(files: Sequence[SourceFile], val_fraction: float) -> tuple[list[SourceFile], list[SourceFile]]:
    train = [f for f in files if not is_validation(f.path, val_fraction)]
    val = [f for f in files if is_validation(f.path, val_fraction)]
    if not val and len(train) >= 2:  # tiny projects: hold out the file with the smallest hash
        pick = min(train, key=lambda f: _path_hash(f.path))
        train.remove(pick)
        val = [pick]
    if not train and len(val) >= 2:
        pick = max(val, key=lambda f: _path_hash(f.path))
        val.remove(pick)
        train = [pick]
    return train, val


def split_check(train: Sequence[SourceFile], fraction: float = CHECK_FRACTION
                ) -> tuple[list[SourceFile], list[SourceFile]]:
    """(training files, check files): the check files chosen by a hash of the path salted apart
    from the validation split's; at least MIN_CHECK_FILES while a file or more stays to train on."""
    key = {f.path: _path_hash("check:" + f.path) for f in train}
    check = [f for f in train if key[f.path] / 2**64 < fraction]
    want = min(MIN_CHECK_FILES, len(train) - 1)
    if len(check) < want:
        check = sorted(train, key=lambda f: key[f.path])[:want]
    check = check[:max(0, len(train) - 1)]  # a file or more stays to train on
    names = {f.path for f in check}
    return [f for f in train if f.path not in names], [f for f in train if f.path in names]


def replay_documents(target_chars: int, seed: int) -> list[Document]:
    """A seeded sample of the standard library's training files, about `target_chars` of text."""
    import random

    from codeassist.training.stdlib import split_documents, stdlib_documents

    docs, _ = split_documents(stdlib_documents())
    random.Random(f"replay:{seed}").shuffle(docs)
    out, chars = [], 0
    for d in docs:
        if chars >= target_chars:
            break
        out.append(d)
        chars += len(d.text)
    return out


def _docs(files: Sequence[SourceFile]) -> list[Document]:
    return [Document(path=f.path, text=f.text) for f in files]


def _int(value: object) -> int:
    return int(value)  # type: ignore[call-overload]


def tokenizer_identity(tokenizer: Tokenizer | None) -> str:
    """The tokenizer's name, with a hash of its metadata when that holds more than the name
    (ours is its name alone, so our data ids are as before families)."""
    if tokenizer is None:
        return TOKENIZER_NAME
    meta = tokenizer.to_metadata()
    if meta == {"tokenizer": tokenizer.name}:
        return tokenizer.name
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    return f"{tokenizer.name}:{digest}"


def compute_data_id(entries: dict[str, dict[str, object]], seed: int, fim_rate: float,
                    tokenizer: str = TOKENIZER_NAME) -> str:
    key = json.dumps({"splits": {k: v["sha256"] for k, v in sorted(entries.items())}, "seed": seed,
                      "fim_rate": fim_rate, "tokenizer": tokenizer}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def fim_passes(train: Sequence[SourceFile], fim_rate: float = FIM_RATE) -> int:
    """How many FIM passes to write for this training split (see FIM_PASS_CHARS)."""
    chars = sum(len(f.text) for f in train)
    if fim_rate <= 0 or chars == 0:
        return 1
    return max(1, min(MAX_FIM_PASSES, FIM_PASS_CHARS // chars))


def build_dataset(files: Sequence[SourceFile], out_dir: Path, seed: int = 0,
                  val_fraction: float = VAL_FRACTION, fim_rate: float = FIM_RATE, workers: int = 2,
                  progress: bool = False, source: str = "", passes: int | None = None,
                  check: bool = False, replay_ratio: float = 0.0,
                  replay: Sequence[Document] | None = None, tokenizer: Tokenizer | None = None) -> Dataset:
    """Write out_dir/{train,val}.bin, val_files.jsonl and manifest.json; deterministic in `files`.

    `tokenizer`: the model's (None: ours).
    `passes`: FIM passes over the training files; by default `fim_passes(train)`. `check`: hold
    out the early stop's check split (check.bin). `replay_ratio` > 0: write replay.bin from
    `replay` (by default a sample of the standard library sized for that ratio).
    """
    if tokenizer is not None and not tokenizer.fim:
        fim_rate = 0.0  # a model without FIM markers trains left to right (one pass: more would repeat it)
    train, val = split_files(files, val_fraction)
    checked: list[SourceFile] = []
    if check:
        train, checked = split_check(train)
        if not checked:
            raise ValueError("there are too few files to hold out a check split for early stopping")
    if not train:
        raise ValueError("no source files to train on")
    n_passes = fim_passes(train, fim_rate) if passes is None else passes
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = {
        "train": write_split(_docs(train), out_dir, "train", seed=seed, fim_rate=fim_rate,
                             workers=workers, progress=progress, passes=n_passes, tokenizer=tokenizer),
        "val": write_split(_docs(val), out_dir, "val", seed=seed, fim_rate=0.0, workers=workers,
                           progress=progress, tokenizer=tokenizer),
    }
    if checked:
        entries["check"] = write_split(_docs(checked), out_dir, "check", seed=seed, fim_rate=0.0,
                                       workers=workers, progress=progress, tokenizer=tokenizer)
    if replay_ratio > 0:
        if replay is None:
            share = replay_ratio / (1 - replay_ratio) * sum(len(f.text) for f in train) * n_passes
            replay = replay_documents(int(min(REPLAY_MAX_CHARS, max(REPLAY_MIN_CHARS, share))), seed)
        entries["replay"] = write_split(list(replay), out_dir, "replay", seed=seed, fim_rate=fim_rate,
                                        workers=workers, progress=progress, tokenizer=tokenizer)
    tmp = out_dir / (VAL_FILES + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for f in val:
            fh.write(json.dumps({"path": f.path, "language": f.language, "text": f.text}) + "\n")
    os.replace(tmp, out_dir / VAL_FILES)
    identity = tokenizer_identity(tokenizer)
    data_id = compute_data_id(entries, seed, fim_rate, identity)
    languages = sorted({f.language for f in files})
    write_manifest(out_dir, entries, {"data_id": data_id, "seed": seed, "fim_rate": fim_rate,
                                      "val_fraction": val_fraction, "tokenizer": identity,
                                      "dtype": shard_dtype(tokenizer).name,
                                      "languages": languages, "source": source})
    return Dataset(folder=out_dir, data_id=data_id, train_tokens=_int(entries["train"]["tokens"]),
                   val_tokens=_int(entries["val"]["tokens"]), train_files=len(train), val_files=len(val),
                   passes=_int(entries["train"]["passes"]), check_tokens=_split_tokens(entries, "check"),
                   replay_tokens=_split_tokens(entries, "replay"), tokenizer=identity)


def read_dataset(out_dir: Path) -> Dataset:
    m = read_manifest(out_dir)
    splits: dict[str, dict[str, object]] = m["splits"]  # type: ignore[assignment]
    return Dataset(folder=out_dir, data_id=str(m["data_id"]), train_tokens=_int(splits["train"]["tokens"]),
                   val_tokens=_int(splits["val"]["tokens"]), train_files=_int(splits["train"]["documents"]),
                   val_files=_int(splits["val"]["documents"]), passes=_int(splits["train"].get("passes", 1)),
                   check_tokens=_split_tokens(splits, "check"), replay_tokens=_split_tokens(splits, "replay"),
                   tokenizer=str(m.get("tokenizer", TOKENIZER_NAME)))


def _split_tokens(entries: dict[str, dict[str, object]], name: str) -> int:
    return _int(entries[name]["tokens"]) if name in entries else 0


def read_val_files(out_dir: Path) -> list[SourceFile]:
    path = out_dir / VAL_FILES
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fh:
        return [SourceFile(**json.loads(line)) for line in fh if line.strip()]
