import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from codeassist.evaluation.lines import choose_cases, cut_texts
from codeassist.evaluation.repo import HEURISTIC_ROWS, copy_heuristic, make_workspace, source_texts

WORD = re.compile(r"\w")

CLIENT = '''"""A small HTTP client."""
import json_payload_parser
from collections import OrderedDict


class ConnectionPoolManager:
    def __init__(self, maximum_connections=10, keepalive_expiry=5.0):
        self.maximum_connections = maximum_connections
        self.keepalive_expiry = keepalive_expiry
        self.connection_pool = OrderedDict()

    def acquire_connection(self, origin_address):
        existing_connection = self.connection_pool.pop(origin_address, None)
        if existing_connection is not None and existing_connection.is_reusable():
            return existing_connection
        return self.open_new_connection(origin_address)

    def release_connection(self, origin_address, connection):
        if len(self.connection_pool) >= self.maximum_connections:
            self.connection_pool.popitem(last=False).close_everything()
        self.connection_pool[origin_address] = connection
'''
MODELS = '''from dataclasses import dataclass


@dataclass
class ResponseHeaders:
    content_type: str = "application/json"
    content_length: int = 0

    def as_dictionary(self):
        return {"content-type": self.content_type, "content-length": str(self.content_length)}
'''


def git(root: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True,
                          env=env).stdout


def make_repo(root: Path, with_git: bool = True) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "client.py").write_text(CLIENT)
    (root / "pkg" / "models.py").write_text(MODELS)
    (root / "pkg" / "logo.png").write_bytes(b"\x89PNG\r\n\x00\x00binary")
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "client.cpython-311.pyc").write_bytes(b"\x00\x01compiled")
    (root / "pkg" / "generated_answers.py").write_text("ANSWER = 'do not copy me'\n")
    (root / ".env").write_text("API_KEY=not-for-the-copy\n")
    if with_git:
        (root / ".gitignore").write_text("__pycache__/\ngenerated_answers.py\n")
        git(root, "init", "-q")
        git(root, "add", "--all")
        git(root, "commit", "-q", "-m", "init")
    return root


def test_cases_are_deterministic_and_never_cut_inside_a_word(tmp_path: Path) -> None:
    texts = source_texts(make_repo(tmp_path / "repo"))
    assert sorted(texts) == ["pkg/client.py", "pkg/models.py"]  # no binary, ignored, cached or secret file
    cases = choose_cases(texts, 24, seed=3)
    assert cases == choose_cases(texts, 24, seed=3)
    assert cases != choose_cases(texts, 24, seed=4)
    assert len(cases) == 24 and len({(c.path, c.line) for c in cases}) == 24
    for c in cases:
        line = texts[c.path].split("\n")[c.line]
        code = line.rstrip()
        indent = len(code) - len(code.lstrip())
        assert len(code.strip()) >= 2
        assert c.expected == line[c.col:].rstrip() and c.expected  # something is left to complete
        assert not (WORD.match(line[c.col - 1]) and WORD.match(line[c.col])), (line, c.col)
        assert (c.col == indent) == c.at_indent
    mid_line = [c for c in cases if not c.at_indent]
    assert 9 <= len(mid_line) <= 12  # half, less lines with no word boundary inside their code


def test_workspace_copy_cuts_every_target_line_and_commits(tmp_path: Path) -> None:
    source = make_repo(tmp_path / "repo")
    texts = source_texts(source)
    cases = choose_cases(texts, 20, seed=1)
    copied = make_workspace(source, tmp_path / "copy", cut_texts(texts, cases))
    copy = tmp_path / "copy"
    assert sorted(copied) == [".gitignore", "pkg/client.py", "pkg/models.py"]
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file() and ".git/" not in str(p)
                  ) == [".gitignore", "pkg/client.py", "pkg/models.py"]
    targets = {(c.path, c.line): c for c in cases}
    for rel in ("pkg/client.py", "pkg/models.py"):
        original = texts[rel].split("\n")
        on_disk = (copy / rel).read_text().split("\n")
        assert copied[rel].split("\n") == on_disk and len(on_disk) == len(original)
        for i, (was, now) in enumerate(zip(original, on_disk, strict=True)):
            case = targets.get((rel, i))
            assert now == (was if case is None else was[:case.col]), (rel, i)
    assert git(copy, "status", "--porcelain") == ""
    assert sorted(git(copy, "ls-files").split()) == [".gitignore", "pkg/client.py", "pkg/models.py"]


def test_workspace_copy_of_a_plain_folder_skips_caches_binaries_and_secrets(tmp_path: Path) -> None:
    source = make_repo(tmp_path / "repo", with_git=False)
    copied = make_workspace(source, tmp_path / "copy", {})
    assert sorted(copied) == ["pkg/client.py", "pkg/generated_answers.py", "pkg/models.py"]
    assert not (tmp_path / "copy" / "pkg" / "logo.png").exists()
    assert not (tmp_path / "copy" / ".env").exists()


def test_copy_heuristic_takes_the_longest_match_and_its_most_frequent_rest() -> None:
    doc = "with open(p) as f:\n    return f.read()\n\nwith open(p) as f:\n    return "
    assert copy_heuristic(doc, len(doc)) == "f.read()"
    # Elsewhere in the repository a longer match ("\n" + the same) wins over the document's.
    other = "x = 1\nwith open(p) as f:\n    return json.load(f)\n"
    assert copy_heuristic(doc, len(doc), [other]) == "json.load(f)"
    # Among equally long matches, the rest of line seen most often; on a tie, the first found.
    key = "value = compute("
    assert copy_heuristic(key, len(key), [f"{key}a)\n{key}b)\n{key}b)\n"]) == "b)"
    assert copy_heuristic(key, len(key), [f"{key}a)\n{key}b)\n"]) == "a)"


def test_copy_heuristic_never_reads_the_cursor_position() -> None:
    doc = "result = transform(items)\n"
    # The only occurrence of the text before the cursor is the cursor's own: nothing to copy,
    # even though this (uncut) document holds the answer right after the cursor.
    assert copy_heuristic(doc, len("result = transform(")) == ""
    assert copy_heuristic(doc, len("result = transform("), ["other = transform(x)\n"]) == "x)"
    assert copy_heuristic("ab = ", 5, ["ab = 1\n"]) == ""  # under 6 characters: no match


def codeassist(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "codeassist.cli.main", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_eval_repo_runs_each_configuration_and_the_heuristic(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    done = codeassist("eval", "--repo", str(repo), "--samples", "6", "--backend", "fake")
    assert done.returncode == 0, done.stderr
    rows = [ln.split("  ")[0].strip() for ln in done.stdout.splitlines()[2:] if ln.strip()]
    assert rows == ["off", "on", "copy heuristic (document)", "copy heuristic (document + repository)"]
    assert "6 lines from 2 files" in done.stdout and "stray ws" in done.stdout

    done = codeassist("eval", "--repo", str(repo), "--repo", str(repo), "--samples", "4", "--json",
                      "--configs", "off,on,repo", "--backend", "fake")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["repos"]) == 2 and set(report["mean"]) == {"off", "on", "repo", *HEURISTIC_ROWS}
    for name in ("off", "on", "repo"):
        row = report["repos"][0]["rows"][name]
        assert row["samples"] == 4 and row["empty_rate"] == 0.0  # the fake always answers
        assert row["status"]["backend"] == "fake" and row["rss_mb"] > 0


@pytest.mark.parametrize(("args", "says"), [((), "--repo"), (("--configs", "off,everything"), "everything")])
def test_eval_repo_user_errors_are_one_line(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    done = codeassist("eval", *(("--repo", str(tmp_path), *args) if args else ()))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and says in done.stderr, done.stderr
