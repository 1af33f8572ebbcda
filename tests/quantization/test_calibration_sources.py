"""GPTQ calibration on the user's code reads it as `codeassist train` does: no secret files, no secrets."""

from pathlib import Path

from codeassist.quantization.calibration import collect_documents

AWS = "AKIA" + "IOSFODNN7EXAMPLE"


def test_calibration_never_reads_secret_files_or_keeps_secrets(tmp_path: Path) -> None:
    repo = tmp_path / "proj"
    repo.mkdir()
    (repo / "app.py").write_text(f'import os\n\nKEY = "{AWS}"\n\n\ndef main():\n    return os.getcwd()\n' * 3)
    (repo / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")
    (repo / ".env").write_text("PASSWORD=hunter2\n")
    (repo / "blob.py").write_bytes(b"\x00\x01binary")
    docs = collect_documents([repo])
    assert [Path(d.path).name for d in docs] == ["app.py"]
    assert AWS not in docs[0].text and "def main()" in docs[0].text
