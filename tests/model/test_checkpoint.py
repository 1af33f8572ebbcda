"""Model files: round trip, metadata, and one clear sentence for every bad file."""

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from codeassist.model.checkpoint import ModelFileError, load_model, read_info, save_model
from codeassist.model.store import resolve_model
from tests.conftest import make_tiny


def test_round_trip_keeps_weights_config_and_provenance(tmp_path: Path) -> None:
    model = make_tiny()
    path = tmp_path / "m.safetensors"
    save_model(model, path, provenance={"data": "stdlib", "steps": 7, "val_loss": 2.5})
    loaded, info = load_model(path)
    assert info.config == model.config and info.scheme == "none"
    assert info.provenance == {"data": "stdlib", "steps": 7, "val_loss": 2.5}
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # still tied
    idx = torch.randint(0, 50000, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(loaded(idx), model(idx))


def test_metadata_not_the_file_name_decides(tmp_path: Path) -> None:
    path = tmp_path / "int4-gptq-gpt2-124M.safetensors"  # a misleading name changes nothing
    save_model(make_tiny(), path)
    assert read_info(path).scheme == "none" and read_info(path).config.n_layer == 2


def test_half_precision_files_load(tmp_path: Path) -> None:
    path = tmp_path / "bf16.safetensors"
    save_model(make_tiny(), path, dtype=torch.bfloat16)
    model, _ = load_model(path, dtype=torch.float32)
    assert model.lm_head.weight.dtype == torch.float32


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "foreign", "missing", "folder",
                                    "bad-config", "unknown-scheme"])
def test_bad_files_fail_with_one_sentence(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "m.safetensors"
    save_model(make_tiny(), path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 4096)
    elif damage == "foreign":
        save_file({"w": torch.zeros(3)}, str(path))
    elif damage == "missing":
        path.unlink()
    elif damage == "folder":
        path.unlink()
        path.mkdir()
    elif damage == "bad-config":
        save_file({"w": torch.zeros(3)}, str(path), metadata={"format": "codeassist", "version": "1",
                                                               "config": "{not json", "tokenizer": "x"})
    elif damage == "unknown-scheme":
        from codeassist.model.checkpoint import model_metadata

        meta = model_metadata(make_tiny().config, quantization={"scheme": "int3-magic"})
        save_file({"w": torch.zeros(3)}, str(path), metadata=meta)
    with pytest.raises(ModelFileError) as err:
        load_model(path)
    message = str(err.value)
    assert "\n" not in message and len(message) < 300 and ("model" in message or path.name in message)


def test_a_pickle_is_never_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "side-effect"

    class Exploit:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (Path.touch, (marker,))

    for name, payload in [("plain.safetensors", pickle.dumps(Exploit())),
                          ("model.pt", pickle.dumps({"state": Exploit()}))]:
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(ModelFileError, match="pickle"):
            load_model(path)
    # a torch.save zip archive too
    zpath = tmp_path / "zip.safetensors"
    torch.save({"w": torch.zeros(2)}, zpath)
    with pytest.raises(ModelFileError, match="pickle"):
        load_model(zpath)
    assert not marker.exists()


def test_model_names_resolve(tmp_path: Path, isolated_home: Path) -> None:
    from codeassist.model.store import named_model_path

    path = named_model_path("mine")
    save_model(make_tiny(), path)
    assert resolve_model("mine") == (path, "mine")
    with pytest.raises(ModelFileError, match="no model named"):
        resolve_model("nonexistent")


def test_written_files_are_complete_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_model(make_tiny(), path)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temporary left behind
    header = json.loads(path.read_bytes()[8:8 + int.from_bytes(path.read_bytes()[:8], "little")])
    assert header["__metadata__"]["format"] == "codeassist"


def test_a_header_length_ending_in_0x80_is_not_mistaken_for_a_pickle(tmp_path: Path) -> None:
    # the first byte of a safetensors file is the low byte of its header length; 0x80 is the
    # pickle protocol marker, so a naive sniff refuses about one valid file in 256
    path = tmp_path / "m.safetensors"
    for pad in range(300):
        save_model(make_tiny(), path, provenance={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no header length ending in 0x80 within 300 paddings")
    _, info = load_model(path)
    assert info.config.n_layer == 2
