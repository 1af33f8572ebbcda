"""Fixture repositories for the training tests: real git work trees with planted secrets."""

from __future__ import annotations

import subprocess
from pathlib import Path

# Planted secrets: each must never reach a shard. (Fake values in the shape of real ones.)
AWS_KEY_ID = "AKIAQ3EGRT5MZXW7PLKN"
AWS_SECRET = "q8Vd2N/kLz7XwPm4Rj9tBh1YcFs6GaUe0iOnTy3H"
GITHUB_TOKEN = "ghp_R8x2LmQ7vN4kT9wZ1cB6yH3jF5dS0aPgUe2K"
PRIVATE_KEY_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7on"
PASSWORD = "Tr0ub4dor&3xample"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MjQyNDIiLCJuYW1lIjoiUGF0IFRlc3RlciJ9."
       "Nt7V9x1QmKz4P0wLcR8sYbHd2FjA6uEoGiT3nWq5yXk")
EMAIL = "pat.tester@mailhost-example.org"
SECRETS = (AWS_KEY_ID, AWS_SECRET, GITHUB_TOKEN, PRIVATE_KEY_BODY, PASSWORD, JWT, EMAIL)

SECRET_CODE = f'''"""Settings for the uploader."""

import os

AWS_ACCESS_KEY_ID = "{AWS_KEY_ID}"
aws_secret_access_key = "{AWS_SECRET}"
GITHUB_TOKEN = "{GITHUB_TOKEN}"
db_password = "{PASSWORD}"
SESSION = "{JWT}"
MAINTAINER = "Pat Tester <{EMAIL}>"
DEPLOY_KEY = """-----BEGIN RSA PRIVATE KEY-----
{PRIVATE_KEY_BODY}
kT9wZ1cB6yH3jF5dS0aPgUe2KR8x2LmQ7vN4kT9wZ1cB6yH3jF5dS0aPgUe2KR8x2Lm
-----END RSA PRIVATE KEY-----"""


def upload(path):
    """Upload one file and return its key."""
    with open(path, "rb") as f:
        return f.read()
'''

# Look-alikes that must be kept as they are
LOOKALIKES = ('RUN_ID = "123e4567-e89b-12d3-a456-426614174000"',
              'DATABASE_URL = "${DATABASE_URL}"',
              'password = "${DB_PASSWORD}"',
              'RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"',
              'password = os.environ["DB_PASSWORD"]',
              'token_type = "bearer"')


def code_file(n: int, lines: int = 40) -> str:
    """Ordinary, distinct Python source (distinct enough not to be near duplicates)."""
    out = [f'"""Module {n}: helpers for case {n}."""', "", "import math", ""]
    for i in range(lines // 4):
        out += [f"def f_{n}_{i}(x{i}, y):", f"    total_{i} = x{i} * {n * 7 + i} + y - {i * n % 13}",
                f"    return math.sqrt(abs(total_{i})) + {i}.{n}", ""]
    return "\n".join(out) + "\n"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def init_repo(repo: Path) -> Path:
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@t.t")
    git(repo, "config", "user.name", "t")
    return repo


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path
