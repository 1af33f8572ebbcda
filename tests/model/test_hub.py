"""`--model hf:ORG/NAME[@REVISION]`: a snapshot in the Hub's cache layout is found with no request
made, a model that is not cached offline is one sentence that says how to fetch it, and online
it is downloaded once from a fake Hub on loopback (nothing leaves the machine)."""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save, save_file

from codeassist.model.checkpoint import ModelFileError
from codeassist.model.hub import ALLOW_PATTERNS, parse_spec
from codeassist.model.store import cache_dir, list_models, resolve_model

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CODEASSIST_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return tmp_path


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A Hub endpoint on loopback that listens and never answers: any request shows up as a
    pending connection."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
    yield listener
    listener.close()


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub reads HF_HUB_OFFLINE once, at its import, which an offline test in this
    process may have done: the online tests set its flag back as a fresh process would have it."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def was_called(listener: socket.socket) -> bool:
    return bool(select.select([listener], [], [], 0)[0])


def closed_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")


def cache_snapshot(repo_id: str, ref: str = "main", commit: str = COMMIT, weights: bool = True) -> Path:
    """The layout huggingface_hub writes: models--ORG--NAME/refs/<ref> holds the commit, and
    snapshots/<commit>/ the files."""
    repo = cache_dir() / "hf" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / ref).write_text(commit)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 8}))
    (snapshot / "tokenizer.json").write_text("{}")
    if weights:
        save_file({"lm_head.weight": torch.zeros(2, 2)}, str(snapshot / "model.safetensors"))
    return snapshot


@pytest.mark.parametrize("offline", [True, False])
def test_a_cached_snapshot_is_found_without_a_request(home: Path, hub: socket.socket, offline: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = cache_snapshot("Qwen/Qwen2.5-Coder-0.5B")
    path, name = resolve_model("hf:Qwen/Qwen2.5-Coder-0.5B")
    assert path == snapshot and name == "Qwen/Qwen2.5-Coder-0.5B"
    assert (path / "model.safetensors").is_file()
    assert not was_called(hub)  # downloaded once: a cached model never asks the Hub again


def test_a_revision_is_a_ref_or_a_commit(home: Path, hub: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    snapshot = cache_snapshot("bigcode/tiny_starcoder_py", ref="v1.0")
    assert resolve_model("hf:bigcode/tiny_starcoder_py@v1.0")[0] == snapshot
    assert resolve_model(f"hf:bigcode/tiny_starcoder_py@{COMMIT}") == (snapshot, f"bigcode/tiny_starcoder_py@{COMMIT}")
    with pytest.raises(ModelFileError):  # only v1.0 is cached, not main
        resolve_model("hf:bigcode/tiny_starcoder_py")
    assert not was_called(hub)


def test_offline_and_not_cached_is_one_sentence_naming_the_model_and_the_fix(
        home: Path, hub: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelFileError) as err:
        resolve_model("hf:Qwen/Qwen2.5-Coder-1.5B")
    assert str(err.value) == (
        "the model hf:Qwen/Qwen2.5-Coder-1.5B is not in the cache and HF_HUB_OFFLINE is set; run the same "
        f"command once with network access and without HF_HUB_OFFLINE=1 to download it into {home / 'cache' / 'hf'}, "
        "or pass a local folder with --model")
    assert not was_called(hub)


def test_no_network_and_not_cached_is_one_sentence(home: Path, online: None, monkeypatch: pytest.MonkeyPatch) -> None:
    closed_endpoint(monkeypatch)  # online mode, but the Hub refuses the connection
    with pytest.raises(ModelFileError) as err:
        resolve_model("hf:Qwen/Qwen2.5-Coder-1.5B")
    message = str(err.value)
    assert message.startswith("the model hf:Qwen/Qwen2.5-Coder-1.5B is not in the cache and the Hugging Face "
                              "Hub cannot be reached; run the same command once with network access")
    assert "\n" not in message


def test_a_snapshot_without_safetensors_is_refused(home: Path, hub: socket.socket,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache_snapshot("old/pickled", weights=False)
    with pytest.raises(ModelFileError, match="no safetensors weights"):
        resolve_model("hf:old/pickled")


@pytest.mark.parametrize("spec", ["hf:", "hf:Qwen", "hf:a/b/c", "hf:a--b/c", "hf:a/b@", "hf:a/b@../x"])
def test_malformed_names_are_one_sentence(spec: str) -> None:
    if spec == "hf:a/b@":
        assert parse_spec(spec) == ("a/b", None)  # an empty revision is the default branch
        return
    with pytest.raises(ModelFileError) as err:
        parse_spec(spec)
    assert "\n" not in str(err.value) and "hf:" in str(err.value)


def test_cached_models_are_listed(home: Path) -> None:
    assert not any(n.startswith("hf:") for n in list_models())
    cache_snapshot("Qwen/Qwen2.5-Coder-0.5B")
    assert list_models()[-1] == "hf:Qwen/Qwen2.5-Coder-0.5B"


def test_the_download_asks_only_for_what_a_model_needs() -> None:
    assert "*.safetensors" in ALLOW_PATTERNS and "tokenizer.json" in ALLOW_PATTERNS
    assert not any(p.endswith((".bin", ".pt", ".pth", ".ckpt")) or p == "*" for p in ALLOW_PATTERNS)


class FakeHub:
    """The few routes of the Hub that snapshot_download uses, on loopback: the revision's commit,
    the file tree, and each file (HEAD for its metadata, GET for its bytes)."""

    def __init__(self, repo_id: str, files: dict[str, bytes]) -> None:
        import hashlib
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, body: bytes, headers: dict[str, str], send_body: bool) -> None:
                self.send_response(200)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

            def _route(self, send_body: bool) -> None:
                hub.requests.append(f"{self.command} {self.path}")
                path = self.path.split("?")[0]
                if path.startswith(f"/api/models/{repo_id}/revision/"):
                    info = {"id": repo_id, "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]}
                    return self._answer(json.dumps(info).encode(), {"Content-Type": "application/json"}, send_body)
                if path.startswith(f"/api/models/{repo_id}/tree/{COMMIT}"):
                    tree = [{"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                            for f, b in files.items()]
                    return self._answer(json.dumps(tree).encode(), {"Content-Type": "application/json"}, send_body)
                prefix = f"/{repo_id}/resolve/{COMMIT}/"
                if path.startswith(prefix) and path[len(prefix):] in files:
                    body = files[path[len(prefix):]]
                    etag = f'"{hashlib.sha1(body).hexdigest()}"'
                    return self._answer(body, {"X-Repo-Commit": COMMIT, "ETag": etag}, send_body)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self._route(True)

            def do_HEAD(self) -> None:
                self._route(False)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_online_it_downloads_once_and_only_what_a_model_needs(home: Path, online: None,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"config.json": b'{"model_type": "qwen2"}', "tokenizer.json": b"{}", "generation_config.json": b"{}",
             "model.safetensors": save({"lm_head.weight": torch.ones(2, 2)}), "pytorch_model.bin": b"a pickle",
             "README.md": b"# card"}
    hub = FakeHub("Qwen/Qwen2.5-Coder-0.5B", files)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    try:
        path, _ = resolve_model("hf:Qwen/Qwen2.5-Coder-0.5B")
        assert path == home / "cache" / "hf" / "models--Qwen--Qwen2.5-Coder-0.5B" / "snapshots" / COMMIT
        assert sorted(p.name for p in path.iterdir()) == ["config.json", "generation_config.json",
                                                          "model.safetensors", "tokenizer.json"]
        assert (path / "model.safetensors").read_bytes() == files["model.safetensors"]
        assert not any("pytorch_model.bin" in r or "README" in r for r in hub.requests)  # never a pickle
        asked = len(hub.requests)
        assert resolve_model("hf:Qwen/Qwen2.5-Coder-0.5B")[0] == path
        assert len(hub.requests) == asked  # the second time, no request at all
        assert "hf:Qwen/Qwen2.5-Coder-0.5B" in list_models()
    finally:
        hub.close()


def test_the_engine_loads_an_hf_model_downloaded_from_the_hub(home: Path, online: None, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`--model hf:` everywhere --model is taken: Engine.load downloads a tiny Qwen2 (its tokenizer
    files included) and answers as the same folder loaded by path."""
    from codeassist.model.engine import Engine, GenerationRequest, StopRules
    from codeassist.model.hf_tokenizer import HFTokenizer
    from tests.model.test_tokenization import build_folder, save_tiny_qwen2

    folder = build_folder(tmp_path / "tiny-qwen", "qwen")
    save_tiny_qwen2(folder, HFTokenizer.from_folder(folder).n_vocab + 20, positions=256)
    hub = FakeHub("tiny/qwen", {p.name: p.read_bytes() for p in folder.iterdir()})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    try:
        engine = Engine.load("hf:tiny/qwen", device="cpu")
    finally:
        hub.close()
    local = Engine.load(str(folder), device="cpu")
    assert engine.name == "tiny/qwen" and engine.tokenizer.template is not None
    assert engine.tokenizer.template.name == "qwen"
    ids = engine.tokenizer.encode("def main():\n    return")
    request = GenerationRequest(prompt=ids, stop=StopRules(max_new_tokens=6, stop_on_eos=False))
    assert engine.generate(request).tokens == local.generate(request).tokens


def test_without_huggingface_hub_installed_it_says_what_to_install(home: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(ModelFileError) as err:
        resolve_model("hf:Qwen/Qwen2.5-Coder-0.5B")
    assert str(err.value) == ("hf:Qwen/Qwen2.5-Coder-0.5B needs the huggingface_hub package; install it with "
                              "'pip install huggingface_hub', or pass a local folder with --model")
