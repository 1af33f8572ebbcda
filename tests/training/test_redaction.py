from __future__ import annotations

import pytest

from codeassist.training.redaction import is_high_entropy, is_secret_filename, redact

from .fixtures import LOOKALIKES, SECRET_CODE, SECRETS


def test_every_planted_secret_is_replaced() -> None:
    text, counts = redact(SECRET_CODE)
    for secret in SECRETS:
        assert secret not in text
    assert "-----BEGIN RSA PRIVATE KEY-----" not in text and "<PRIVATE_KEY>" in text
    assert counts["EMAIL"] == 1 and counts["PRIVATE_KEY"] == 1 and counts["PASSWORD"] >= 1
    assert 'db_password = "<PASSWORD>"' in text
    assert "def upload(path):" in text  # the code around the secrets survives


@pytest.mark.parametrize("line", LOOKALIKES)
def test_lookalikes_are_kept(line: str) -> None:
    assert redact(line + "\n") == (line + "\n", {})


def test_bare_assignments_only_in_config_files() -> None:
    conf = "[db]\npassword = hunter2hunter\nuser = app\n"
    assert "hunter2hunter" not in redact(conf, bare_assignments=True)[0]
    code = "password = get_password()\n"
    assert redact(code, bare_assignments=False)[0] == code


def test_high_entropy_rule() -> None:
    assert is_high_entropy("Zx9kQ2mN7pL4vR8tW1yB5cD3fG6hJ0")  # random base64-like
    assert not is_high_entropy("a" * 40)
    assert not is_high_entropy("d41d8cd98f00b204e9800998ecf8427ed41d8cd9")  # a hex digest
    assert not is_high_entropy("stringEndArchive64LocatorSignature")  # an identifier


@pytest.mark.parametrize("path", [".env", ".env.local", "config/prod.env", "certs/server.pem", "tls.key",
                                  "home/.ssh/id_rsa", "id_ed25519.pub", ".netrc", ".npmrc", ".pypirc",
                                  "credentials", "gcp-credentials.json", ".aws/config", "kubeconfig",
                                  "infra/terraform.tfstate", "terraform.tfstate.backup"])
def test_secret_file_names(path: str) -> None:
    assert is_secret_filename(path)


@pytest.mark.parametrize("path", ["env.py", "src/keyboard.py", "environment.md", "keys.py", "README.md",
                                  "credentials_helper.py", "monkey.py"])
def test_ordinary_file_names(path: str) -> None:
    assert not is_secret_filename(path)
