"""`--model gpt2`: its two files are downloaded once into the cache, each landing whole, from a
fake Hub on loopback (CODEASSIST_HF_ENDPOINT); a failed download is one sentence and leaves nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from codeassist.model.checkpoint import ModelFileError
from codeassist.model.store import resolve_model

FILES = {"config.json": b'{"n_positions": 64}', "model.safetensors": b"\x08" * 4096}


@dataclass
class Hub:
    files: dict[str, bytes] = field(default_factory=lambda: dict(FILES))
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    state = Hub()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            body = state.files.get(self.path.removeprefix("/gpt2/resolve/main/"))
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("CODEASSIST_HOME", str(tmp_path))
    monkeypatch.setenv("CODEASSIST_HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield state
    server.shutdown()
    server.server_close()


def test_gpt2_is_downloaded_once_into_the_cache(hub: Hub, tmp_path: Path) -> None:
    path, name = resolve_model("gpt2")
    assert (path, name) == (tmp_path / "cache" / "hf" / "gpt2", "gpt2")
    assert {p.name: p.read_bytes() for p in path.iterdir()} == FILES  # no .part file left
    assert sorted(hub.requests) == ["/gpt2/resolve/main/config.json", "/gpt2/resolve/main/model.safetensors"]
    assert resolve_model("gpt2")[0] == path and len(hub.requests) == 2  # cached: no second download


def test_a_failed_download_is_one_sentence_and_leaves_no_partial_file(hub: Hub, tmp_path: Path) -> None:
    del hub.files["model.safetensors"]
    with pytest.raises(ModelFileError) as err:
        resolve_model("gpt2")
    assert str(err.value).startswith("could not download gpt2 from http://127.0.0.1:")
    assert "(404 for model.safetensors); check the network" in str(err.value) and "\n" not in str(err.value)
    folder = tmp_path / "cache" / "hf" / "gpt2"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]  # no model.safetensors, no .part
    hub.files["model.safetensors"] = FILES["model.safetensors"]
    assert resolve_model("gpt2")[0] == folder  # the next try completes it
