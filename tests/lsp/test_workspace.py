"""The workspace index reads only what the training collector would, stays current, and survives
whatever a repository holds."""

import builtins
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from codeassist.lsp.workspace import WorkspaceIndex
from codeassist.model import tokenizer as tok

SECRET = "AKIA_never_suggest_this_value"


def _git(root: Path) -> None:
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
                   check=True)


def _index(root: Path, docs: dict[str, tuple[str, int, str]] | None = None) -> WorkspaceIndex:
    docs = {} if docs is None else docs
    index = WorkspaceIndex(lambda: docs)
    index.start([root])
    assert index.wait(60)
    return index


def _rests(index: WorkspaceIndex, before: str, doc: str = "") -> list[str]:
    """Copy candidates for a cursor at the end of `before`, typed into an open scratch document."""
    uri = "file:///scratch/current.py"
    text = doc + before
    docs = index.documents()
    docs[uri] = ("/scratch/current.py", 1, text)
    ids = tok.encode(before)
    return [c.text for c in index.candidates(uri, len(text), ids, "")]


def test_secret_files_are_never_opened_and_gitignore_is_honoured(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "app.py").write_text("def connect():\n    return open_connection(HOST, PORT)\n")
    (tmp_path / ".env").write_text(f"KEY = {SECRET}\n")
    (tmp_path / "id_rsa").write_text(SECRET)
    (tmp_path / ".gitignore").write_text("ignored.py\n")
    (tmp_path / "ignored.py").write_text("def connect():\n    return ignored_connection()\n")
    _git(tmp_path)
    opened: list[str] = []
    real_open = builtins.open

    def spy(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(os.path.basename(str(file)))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    index = _index(tmp_path)
    assert "app.py" in opened and ".env" not in opened and "id_rsa" not in opened
    assert "ignored.py" not in opened
    assert index.stats().files == 1
    assert _rests(index, "x = 1\ndef connect():\n    return") == [" open_connection(HOST, PORT)"]


def test_the_index_follows_saves_and_deletions(tmp_path: Path) -> None:
    f = tmp_path / "mod.py"
    f.write_text("def size(self):\n    return len(self.items)\n")
    _git(tmp_path)
    index = _index(tmp_path)
    before = "x = 1\ndef size(self):\n    return"
    assert _rests(index, before) == [" len(self.items)"]
    f.write_text("def size(self):\n    return self.count\n")
    index.file_changed(str(f))  # didSave / didChangeWatchedFiles
    assert _rests(index, before) == [" self.count"]
    f.unlink()
    index.file_changed(str(f))
    assert _rests(index, before) == []


def test_an_open_document_answers_from_its_live_text_not_the_disk(tmp_path: Path) -> None:
    f = tmp_path / "mod.py"
    f.write_text("def size(self):\n    return len(self.items)\n")
    _git(tmp_path)
    index = _index(tmp_path)
    index.documents()[f.as_uri()] = (os.path.realpath(f), 2, "def size(self):\n    return self.total\n")
    assert _rests(index, "x = 1\ndef size(self):\n    return") == [" self.total"]


def test_the_cursor_line_never_answers_itself(tmp_path: Path) -> None:
    index = WorkspaceIndex(dict)
    uri = "file:///a.py"
    text = "y = 0\nvalue = compute(1)\ny = 0\nvalue = compute"
    docs = {uri: ("/a.py", 1, text + "(2)\n")}  # the rest of the cursor's line is in the document
    index.documents = lambda: docs
    found = index.candidates(uri, len(text), tok.encode("y = 0\nvalue = compute"), "")
    assert [c.text for c in found] == ["(1)"]


@pytest.mark.slow
def test_binary_and_huge_files_are_skipped_and_the_index_stays_bounded(tmp_path: Path) -> None:
    (tmp_path / "blob.py").write_bytes(b"\x00\x01binary" * 1000)
    with open(tmp_path / "huge.py", "w") as f:  # 50 MB
        line = "value = compute_something(argument_one, argument_two)\n"
        f.write(line * (50 * 2**20 // len(line)))
    for i in range(30):
        (tmp_path / f"m{i}.py").write_text(f"def f{i}(self):\n    return self.value_{i} + {i}\n" * 20)
    _git(tmp_path)
    index = WorkspaceIndex(dict, max_tokens=2000)
    index.start([tmp_path])
    assert index.wait(120)
    stats = index.stats()
    assert stats.error is None and stats.tokens <= 2000 and stats.truncated
    assert 0 < stats.files < 30


def test_retrieved_snippets_come_from_the_most_similar_chunk_of_another_file(tmp_path: Path) -> None:
    (tmp_path / "billing.py").write_text(
        "def invoice_total(invoice):\n    subtotal = sum(line.amount for line in invoice.lines)\n"
        "    return subtotal + invoice.shipping_fee - invoice.discount\n")
    (tmp_path / "other.py").write_text("def unrelated():\n    return 42\n" * 3)
    _git(tmp_path)
    index = _index(tmp_path)
    query = "    subtotal = sum(line.amount for line in invoice.lines)\n"
    found = index.snippets("file:///elsewhere.py", query, 2)
    assert found and found[0].path == "billing.py" and found[0].text.startswith("def invoice_total(invoice):")
    assert "invoice.shipping_fee" in found[0].text
    # the same file open in the editor answers from its live text, not from a stale disk chunk
    index.documents()[(tmp_path / "billing.py").as_uri()] = (os.path.realpath(tmp_path / "billing.py"), 1, "")
    assert all(s.path != "billing.py" for s in index.snippets("file:///elsewhere.py", query, 2))
