"""`--model hf:ORG/NAME[@REVISION]`: an open model from the Hugging Face Hub, fetched once.

The files a model needs (config, generation config, tokenizer, safetensors weights; never
pickles) are downloaded through huggingface_hub into our cache folder, in the Hub's own cache
layout (`models--ORG--NAME/snapshots/<commit>/`), so its tools can inspect or fill it too. Once
a snapshot is there it is used without asking the Hub again: an editor starting its language
server must not wait on the network. HF_HUB_OFFLINE=1 never touches the network; offline and
not cached is one sentence that says how to fetch the model.

huggingface_hub is imported only here, and only when an `hf:` model is asked for.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from codeassist.model.checkpoint import ModelFileError

PREFIX = "hf:"
ALLOW_PATTERNS = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                  "special_tokens_map.json", "*.safetensors", "model.safetensors.index.json"]
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


def is_hub_spec(text: str) -> bool:
    return text.startswith(PREFIX)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """("ORG/NAME", revision or None) of "hf:ORG/NAME[@REVISION]"; a malformed one is one sentence."""
    repo_id, _, revision = spec.removeprefix(PREFIX).partition("@")
    if not _REPO.match(repo_id) or "--" in repo_id or ".." in repo_id:
        raise ModelFileError(f"{spec!r} is not a Hugging Face model: write hf:ORG/NAME or hf:ORG/NAME@REVISION "
                             "(for example hf:Qwen/Qwen2.5-Coder-0.5B)")
    if revision and (not _REVISION.match(revision) or ".." in revision):
        raise ModelFileError(f"{spec!r} has an invalid revision {revision!r}: use a branch, a tag or a commit hash")
    return repo_id, revision or None


def hub_cache_dir() -> Path:
    from codeassist.model.store import cache_dir

    return cache_dir() / "hf"


def is_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it, but read now: the
    library reads it once, at its import."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def resolve_hub_model(spec: str) -> Path:
    """The local snapshot folder of `spec`, downloading it first when it is not cached."""
    repo_id, revision = parse_spec(spec)
    try:
        import huggingface_hub
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise ModelFileError(f"{spec} needs the huggingface_hub package; install it with "
                             "'pip install huggingface_hub', or pass a local folder with --model") from None
    cache = hub_cache_dir()
    kwargs: dict[str, Any] = {"revision": revision, "cache_dir": str(cache), "allow_patterns": ALLOW_PATTERNS}
    try:  # the cache first, with no request at all
        return _checked(spec, Path(huggingface_hub.snapshot_download(repo_id, local_files_only=True, **kwargs)))
    except LocalEntryNotFoundError:
        pass
    except ValueError as exc:  # a revision or repository name the library refuses
        raise ModelFileError(f"{spec} cannot be resolved ({_first_line(exc)})") from None
    fetch = (f"run the same command once with network access{' and without HF_HUB_OFFLINE=1' if is_offline() else ''} "
             f"to download it into {cache}, or pass a local folder with --model")
    if is_offline():
        raise ModelFileError(f"the model {spec} is not in the cache and HF_HUB_OFFLINE is set; {fetch}")
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now, as HF_HUB_OFFLINE above
    try:
        folder = huggingface_hub.snapshot_download(repo_id, endpoint=endpoint, **kwargs)
    except LocalEntryNotFoundError:  # the library could not reach the Hub and has no snapshot
        raise ModelFileError(f"the model {spec} is not in the cache and the Hugging Face Hub cannot be "
                             f"reached; {fetch}") from None
    except Exception as exc:  # not found, gated, refused: the library's own reason, on one line
        raise ModelFileError(f"the model {spec} could not be downloaded ({type(exc).__name__}: "
                             f"{_first_line(exc)})") from None
    return _checked(spec, Path(folder))


def _checked(spec: str, folder: Path) -> Path:
    if not (folder / "config.json").is_file():
        raise ModelFileError(f"the model {spec} has no config.json, so it is not a transformers model")
    if not any(folder.glob("*.safetensors")):
        raise ModelFileError(f"the model {spec} has no safetensors weights (codeassist never loads pickles); "
                             "pick a repository that has model.safetensors")
    return folder


def cached_hub_models() -> list[str]:
    """The `hf:` names with a snapshot in our cache (a revision appears as its own name only if asked so)."""
    root = hub_cache_dir()
    names = []
    for repo in sorted(root.glob("models--*--*")) if root.is_dir() else ():
        org, _, name = repo.name.removeprefix("models--").partition("--")
        snapshots = repo / "snapshots"
        if snapshots.is_dir() and any((s / "config.json").is_file() for s in snapshots.iterdir()):
            names.append(f"{PREFIX}{org}/{name}")
    return names


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
