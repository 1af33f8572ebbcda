"""`codeassist train --init-from <an open family>` (issue 15 item 8): the tokenizer follows the model.

A tiny Qwen2 Hugging Face folder (tests/families_fixture.py: transformers weights, a tokenizer.json
with Qwen2.5-Coder's FIM markers) is fine-tuned on a small git project through the CLI: the shards
are in its tokenizer, the installed file is a qwen2 model carrying that tokenizer and the engine
completes with it; LoRA writes a merged file of the same shape; a resume continues exactly; a
resume against another tokenizer is refused. Ours keeps its exact FIM ids, and shards are uint32
only when the vocabulary needs it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from codeassist.cli.main import main
from codeassist.model.checkpoint import load_model, read_info
from codeassist.model.hf_tokenizer import HFTokenizer
from codeassist.model.store import named_model_path
from codeassist.model.tokenization import codeassist_tokenizer
from codeassist.model.tokenizer import EOT_ID, build_fim_ids, encode
from codeassist.training import finetune
from codeassist.training.dataset import read_dataset, read_val_files
from codeassist.training.fim import fim_sample
from codeassist.training.finetune import run_dir
from codeassist.training.shards import Document, load_split, read_manifest, shard_dtype, write_split
from tests.families_fixture import build_folder, hf_decode

from .fixtures import AWS_SECRET, SECRET_CODE, code_file, init_repo, write

FAST = ["--batch-size", "2", "--micro-batch", "1", "--seq-len", "32", "--no-progress", "--precision", "fp32",
        "--eval-interval", "2", "--ckpt-interval", "2", "--workers", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_folder(tmp_path_factory.mktemp("qwen") / "tiny-qwen2", "qwen2").path


def _repo(tmp_path: Path) -> Path:
    repo = init_repo(tmp_path / "proj")
    write(repo / "settings.py", SECRET_CODE)
    for i in range(3):
        write(repo / "src" / f"m{i}.py", code_file(i))
    return repo


def _losses(name: str) -> list[float]:
    with safe_open(str(run_dir(name) / "state.safetensors"), framework="pt") as f:
        return list(json.loads((f.metadata() or {})["state"])["losses"])


def _train(repo: Path, qwen: Path, out: str, *extra: str) -> int:
    return main(["train", str(repo), "--init-from", str(qwen), "--yes", "--out", out, "--lr", "1e-2", *FAST,
                 *extra])


def test_fine_tuning_a_qwen2_folder_trains_in_its_tokenizer_and_installs_a_qwen2_file(
        tmp_path: Path, qwen: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from codeassist.model.completion import complete
    from codeassist.model.engine import Engine

    repo = _repo(tmp_path)
    assert _train(repo, qwen, "q1", "--max-iters", "4", "--gate-lines", "2") == 0
    out = capsys.readouterr().out
    assert "secret file" in out or "replaced with placeholders" in out  # collection and redaction ran
    assert "installed as 'q1'" in out, out
    data = run_dir("q1") / "data"
    tok = HFTokenizer.from_folder(qwen)
    manifest = read_manifest(data)
    assert str(manifest["tokenizer"]).startswith("hf:") and manifest["dtype"] == "uint16"  # 448 ids fit
    # the validation shard decodes back to the held-out file's (redacted) text in Qwen's tokenizer
    val, held = load_split(data, "val"), read_val_files(data)[0].text
    window = [int(i) for i in val[:60]]
    assert max(window) < tok.n_vocab and tok.decode(window) == held[:len(tok.decode(window))]
    assert len(tok.decode(window)) > 60  # merged tokens, not single bytes: Qwen's BPE, not ours
    # the training shard holds Qwen's FIM markers and end of text (the library's own decoding)
    train_text = hf_decode(qwen, [int(i) for i in load_split(data, "train")])
    assert "<|fim_prefix|>" in train_text and "<|fim_middle|>" in train_text and "<|endoftext|>" in train_text
    assert train_text.count("def f_") > 10 and '"<SECRET>"' in train_text  # the project's text, redacted
    assert AWS_SECRET not in train_text and AWS_SECRET not in hf_decode(qwen, [int(i) for i in val])
    # the installed model is a qwen2 file of the folder's shape that carries the tokenizer
    installed = named_model_path("q1")
    info = read_info(installed)
    assert info.family == "qwen2" and info.meta.get("tokenizer") == "hf"
    assert info.meta["tokenizer_json"] == tok.to_metadata()["tokenizer_json"]
    assert info.provenance["steps"] == 4
    engine = Engine.load(str(installed), device="cpu")
    assert engine.tokenizer.to_metadata() == tok.to_metadata()
    text, result = complete(engine, "def f_0_1(x1, y):\n    total_1 = ", max_new_tokens=6, stop=())
    assert result.tokens and all(t < engine.config.vocab_size for t in result.tokens)
    assert result.stop_reason in ("max_tokens", "eos") and isinstance(text, str)
    # a second round from the user's qwen2 model file: the tokenizer comes from its metadata, the
    # data is the same (the same tokenizer identity), and the gate compares with that file
    assert main(["train", str(repo), "--init-from", "q1", "--yes", "--out", "q1", "--lr", "1e-2", *FAST,
                 "--max-iters", "2", "--gate-lines", "2"]) == 0
    out = capsys.readouterr().out
    assert "training q1 on" in out and "per character" not in out and "installed as 'q1'" in out, out
    assert read_info(named_model_path("q1")).provenance["steps"] == 2
    assert main(["train", "--rollback", "--out", "q1"]) == 0  # the first round's model is back
    assert read_info(named_model_path("q1")).provenance["steps"] == 4
    assert read_manifest(data)["tokenizer"] == manifest["tokenizer"]
    assert read_info(run_dir("q1") / "model.safetensors").meta["tokenizer_json"] == info.meta["tokenizer_json"]


def test_lora_writes_a_merged_file_of_the_same_shape(tmp_path: Path, qwen: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from codeassist.model.families import load_pretrained

    repo = _repo(tmp_path)
    assert _train(repo, qwen, "q2", "--max-iters", "3", "--gate-lines", "0", "--method", "lora",
                  "--lora-rank", "4", "--parallel", "fsdp") == 0
    out = capsys.readouterr().out
    assert "LoRA rank 4" in out and "with one process it is ignored" in out
    gate = json.loads((run_dir("q2") / "report.json").read_text())["gate"]
    assert gate["new"]["loss"] < gate["old"]["loss"]  # the merged model's held-out loss is the lower
    merged, info = load_model(run_dir("q2") / "model.safetensors")
    base, _ = load_pretrained(qwen)
    got, want = merged.state_dict(), base.state_dict()
    assert info.family == "qwen2" and info.meta.get("tokenizer") == "hf"
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    assert not any("lora" in k for k in got)
    changed = [k for k in got if not (got[k].float() == want[k].float()).all()]
    assert changed and all(k.endswith("_proj.weight") for k in changed)  # only the adapted layers moved


def test_a_resume_continues_exactly_and_another_tokenizer_is_refused(
        tmp_path: Path, qwen: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _repo(tmp_path)
    assert _train(repo, qwen, "whole", "--max-iters", "4", "--gate-lines", "0") == 0
    real_call = finetune.ProgressBar.__call__

    def interrupt_at_step_3(self: finetune.ProgressBar, p: dict[str, object]) -> None:
        if p["step"] == 3:
            raise KeyboardInterrupt
        real_call(self, p)

    with monkeypatch.context() as patched:
        patched.setattr(finetune.ProgressBar, "__call__", interrupt_at_step_3)
        assert _train(repo, qwen, "cut", "--max-iters", "4", "--gate-lines", "0") == 130
    assert len(_losses("cut")) == 2  # the checkpoint of step 2
    assert _train(repo, qwen, "cut", "--max-iters", "4", "--gate-lines", "0", "--resume") == 0
    assert _losses("cut") == _losses("whole") and len(_losses("whole")) == 4
    # the same run resumed from our model: its shards are in Qwen's tokenizer
    capsys.readouterr()
    assert main(["train", str(repo), "--init-from", "default", "--yes", "--out", "cut", "--max-iters", "5",
                 "--gate-lines", "0", "--resume", *FAST]) == 1
    assert "cannot resume: the run's data was tokenized for tokenizer 'hf:" in capsys.readouterr().err


def test_our_fim_samples_keep_their_exact_ids() -> None:
    """Before families fim_sample drew and laid out so; ours must give the same ids for a seed."""

    def before(text: str, rng: random.Random) -> list[int]:
        if len(text) >= 2 and rng.random() < 0.5:
            a, b = sorted((rng.randrange(len(text) + 1), rng.randrange(len(text) + 1)))
            ids = build_fim_ids(encode(text[:a]), encode(text[b:]), encode(text[a:b]), spm=rng.random() < 0.5)
        else:
            ids = encode(text)
        return [*ids, EOT_ID]

    ours = codeassist_tokenizer()
    text = code_file(3)
    for seed in range(40):
        assert fim_sample(text, random.Random(seed), tokenizer=ours) == before(text, random.Random(seed))
        assert fim_sample(text, random.Random(seed)) == before(text, random.Random(seed))
    p, s, m = encode("def f("), encode("):\n    pass\n"), encode("x, y")
    for spm in (True, False):
        assert ours.fim_ids(p, s, m, spm=spm) == build_fim_ids(p, s, m, spm=spm)


def _wide_tokenizer(folder: Path) -> HFTokenizer:
    """A byte-level tokenizer.json whose ids are all above 65,535 (Qwen2.5's vocabulary has 151,936)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {c: 70_000 + i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = 151_643
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens([AddedToken("<|endoftext|>", special=True)])
    folder.mkdir(parents=True, exist_ok=True)
    tk.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    return HFTokenizer.from_folder(folder)


def test_uint32_shards_round_trip_and_small_vocabularies_stay_uint16(tmp_path: Path, qwen: Path) -> None:
    wide = _wide_tokenizer(tmp_path / "wide")
    docs = [Document("a.py", "def café(x):\n    return x + 1\n"), Document("b.py", "print('✓')\n")]
    entry = write_split(docs, tmp_path / "d32", "train", fim_rate=0.0, workers=1, tokenizer=wide)
    (tmp_path / "d32" / "manifest.json").write_text(json.dumps({"splits": {"train": entry}}))
    ids = load_split(tmp_path / "d32", "train")
    assert entry["dtype"] == "uint32" and ids.dtype == np.uint32 and int(ids.max()) == 151_643
    assert (tmp_path / "d32" / "train.bin").stat().st_size == 4 * int(entry["tokens"])  # type: ignore[call-overload]
    assert wide.decode([int(i) for i in ids]) == docs[0].text + docs[1].text
    assert int(ids.min()) >= 70_000  # every text id above uint16's range, and kept whole
    small = HFTokenizer.from_folder(qwen)
    assert shard_dtype(small) == np.uint16 and shard_dtype(None) == np.uint16 and shard_dtype(wide) == np.uint32
    entry16 = write_split(docs, tmp_path / "d16", "train", fim_rate=0.0, workers=1, tokenizer=small)
    assert entry16["dtype"] == "uint16"
    assert (tmp_path / "d16" / "train.bin").stat().st_size == 2 * int(entry16["tokens"])  # type: ignore[call-overload]
    ours = write_split(docs, tmp_path / "ours", "train", fim_rate=0.0, workers=1)
    raw = np.fromfile(tmp_path / "ours" / "train.bin", dtype=np.uint16)
    assert ours["dtype"] == "uint16" and list(raw) == [*encode(docs[0].text), EOT_ID, *encode(docs[1].text), EOT_ID]


def test_the_data_id_names_the_tokenizer(tmp_path: Path, qwen: Path) -> None:
    from codeassist.training.collect import SourceFile
    from codeassist.training.dataset import build_dataset, tokenizer_identity

    files = [SourceFile(path=f"m{i}.py", language="python", text=code_file(i)) for i in range(3)]
    a = build_dataset(files, tmp_path / "ours", workers=1)
    b = build_dataset(files, tmp_path / "qwen", workers=1, tokenizer=HFTokenizer.from_folder(qwen))
    assert a.tokenizer == "gpt2-ws24-fim" and tokenizer_identity(None) == a.tokenizer
    assert b.tokenizer.startswith("hf:") and a.data_id != b.data_id
    assert read_dataset(tmp_path / "qwen").tokenizer == b.tokenizer


def _interrupted(monkeypatch: pytest.MonkeyPatch, at_step: int, run: Callable[[], int]) -> int:
    real_call = finetune.ProgressBar.__call__

    def interrupt(self: finetune.ProgressBar, p: dict[str, object]) -> None:
        if p["step"] == at_step:
            raise KeyboardInterrupt
        real_call(self, p)

    with monkeypatch.context() as patched:
        patched.setattr(finetune.ProgressBar, "__call__", interrupt)
        return run()


def test_a_lora_resume_continues_exactly_and_another_method_is_refused(
        tmp_path: Path, qwen: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    repo = _repo(tmp_path)
    lora = ["--max-iters", "4", "--gate-lines", "0", "--method", "lora", "--lora-rank", "4"]
    assert _train(repo, qwen, "lwhole", *lora) == 0
    assert _interrupted(monkeypatch, 3, lambda: _train(repo, qwen, "lcut", *lora)) == 130
    capsys.readouterr()
    assert _train(repo, qwen, "lcut", "--max-iters", "4", "--gate-lines", "0", "--method", "full", "--resume") == 1
    assert "cannot resume: the run was trained with LoRA rank 4" in capsys.readouterr().err
    assert _train(repo, qwen, "lcut", *lora[:-1], "8", "--resume") == 1
    assert _train(repo, qwen, "lcut", *lora, "--resume") == 0
    assert _losses("lcut") == _losses("lwhole") and len(_losses("lwhole")) == 4


def test_the_gate_compares_models_of_two_tokenizers_per_character(
        tmp_path: Path, qwen: Path, tiny_model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from codeassist.training.finetune import install_model

    repo = _repo(tmp_path)
    install_model(tiny_model_file, "mixed")  # the user's model, in our tokenizer
    assert _train(repo, qwen, "mixed", "--max-iters", "4", "--gate-lines", "2") == 0
    out = capsys.readouterr().out
    assert "held-out loss per character: the two models have different tokenizers" in out, out
    report = json.loads((run_dir("mixed") / "report.json").read_text())
    old, new = report["gate"]["old"]["loss"], report["gate"]["new"]["loss"]
    # nats per character: our untrained tiny model and the tiny Qwen each near their vocabulary's
    # uniform loss times tokens per character, not per-token losses of one tokenizer read by the other
    assert 0 < old < 12 and 0 < new < 12 and old != new


@pytest.mark.parametrize("family", ["llama", "gpt_bigcode"])
def test_the_other_families_train_in_their_tokenizers(tmp_path: Path, family: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder = build_folder(tmp_path / f"tiny-{family}", family).path
    repo = _repo(tmp_path)
    assert _train(repo, folder, "fam", "--max-iters", "2", "--gate-lines", "0") == 0
    info = read_info(named_model_path("fam"))
    tok = HFTokenizer.from_folder(folder)
    assert info.family == family and info.meta["tokenizer_json"] == tok.to_metadata()["tokenizer_json"]
    data = run_dir("fam") / "data"
    val = [int(i) for i in load_split(data, "val")]
    held = read_val_files(data)[0].text
    if tok.bos_id is not None:  # DeepSeek's layout: every document starts with its BOS
        assert val[0] == tok.bos_id
    assert tok.decode(val[:40]) == held[:len(tok.decode(val[:40]))] and tok.eot_id in val
    train_text = hf_decode(folder, [int(i) for i in load_split(data, "train")])
    assert all(marker in train_text for marker in tok.template.markers()[:3])  # type: ignore[union-attr]


@pytest.mark.slow
def test_torchrun_fsdp_trains_a_qwen2_folder_as_one_process_does(tmp_path: Path, qwen: Path) -> None:
    """`--parallel fsdp` under torchrun with two gloo processes: the losses of one process (60 s)."""
    import os
    import subprocess
    import sys

    repo = _repo(tmp_path)
    common = ["train", str(repo), "--init-from", str(qwen), "--max-iters", "3", "--yes", "--gate-lines", "0",
              "--lr", "1e-2", *FAST]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "codeassist.cli.main", *common, "--out", "sharded", "--parallel", "fsdp"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "with 2 process(es)" in run.stdout and "is ignored" not in run.stdout
    assert main([*common, "--out", "single"]) == 0
    two, one = _losses("sharded"), _losses("single")
    assert len(two) == len(one) == 3 and two == pytest.approx(one, abs=1e-4)
    assert read_info(run_dir("sharded") / "model.safetensors").meta.get("tokenizer") == "hf"


def test_init_from_an_hf_spec_uses_the_cached_snapshot(tmp_path: Path, qwen: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """`--init-from hf:ORG/NAME`: the snapshot in the Hub's cache layout, with HF_HUB_OFFLINE=1."""
    import shutil

    from codeassist.model.store import cache_dir

    commit = "0123456789abcdef0123456789abcdef01234567"
    cached = cache_dir() / "hf" / "models--tiny--qwen2-coder"
    shutil.copytree(qwen, cached / "snapshots" / commit)
    (cached / "refs").mkdir()
    (cached / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = _repo(tmp_path)
    assert main(["train", str(repo), "--init-from", "hf:tiny/qwen2-coder", "--yes", "--out", "hub", "--lr", "1e-2",
                 "--max-iters", "2", "--gate-lines", "0", *FAST]) == 0
    out = capsys.readouterr().out
    assert "training tiny/qwen2-coder on" in out and "installed as 'hub'" in out, out
    info = read_info(named_model_path("hub"))
    assert info.family == "qwen2" and info.meta["tokenizer_json"] == HFTokenizer.from_folder(qwen).to_metadata()[
        "tokenizer_json"]


def test_a_tokenizer_without_fim_markers_writes_one_left_to_right_pass(tmp_path: Path) -> None:
    from codeassist.training.collect import SourceFile
    from codeassist.training.dataset import build_dataset

    wide = _wide_tokenizer(tmp_path / "wide")
    files = [SourceFile(path=f"m{i}.py", language="python", text=code_file(i)) for i in range(3)]
    data = build_dataset(files, tmp_path / "d", workers=1, tokenizer=wide)
    assert data.passes == 1 and read_manifest(tmp_path / "d")["fim_rate"] == 0.0
    ids = [int(i) for i in load_split(tmp_path / "d", "train")]
    held = {f.path for f in read_val_files(tmp_path / "d")}
    assert wide.decode(ids) == "".join(f.text for f in files if f.path not in held)  # each file once, in order
    assert ids.count(wide.eot_id) >= 2 and min(ids) >= 70_000
