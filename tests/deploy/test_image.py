"""The images are built and run, not only written: deploy/build-local-image.sh builds the CPU image
with podman on a locally made Debian base (no registry is reachable here), runs the container on
a free port of the host network with an API key, and checks it from outside; the CUDA Dockerfile
is built up to its torch install. Slow: minutes, and root for apt-get and podman
(../shared/notes/containers.md has the recipe; `make image-test` runs this file)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "build-local-image.sh"


def run_script(*args: str, image: str, timeout_s: int) -> dict[str, str]:
    """Run the script; its stdout lines are `key value`; a failure shows the script's stderr."""
    proc = subprocess.run(["nice", "-n", "10", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "IMAGE": image})
    assert proc.returncode == 0, f"{SCRIPT.name} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr[-6000:]}"
    out = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        out[key] = value
    return out


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=True).stdout


def test_the_cpu_image_builds_and_its_container_serves_health_complete_and_401() -> None:
    image = "localhost/codeassist:cpu-test"
    out = run_script(image=image, timeout_s=1800)
    health = json.loads(out["health"])
    assert health["status"] == "ok" and health["model_loaded"] is True
    assert out["healthcheck"] == "healthy"  # the Dockerfile's HEALTHCHECK command works in the image
    status, _, body = out["complete"].partition(" ")
    assert status == "200"
    completion = json.loads(body)
    assert isinstance(completion["completion"], str)
    assert completion["full_code"] == "def fibonacci(n):" + completion["completion"]
    assert out["no_key"] == "401"
    assert out["exit_code"] == "0"  # SIGTERM drains and exits 0, as Kubernetes expects
    assert out["ok"] == "cpu"
    name = out["stopped"]
    assert podman("ps", "-a", "--filter", f"name=^{name}$", "--format", "{{.Names}}").strip() == ""
    assert podman("images", "--filter", f"reference={image}", "--format", "{{.ID}}").strip() == ""


def test_the_cuda_dockerfile_builds_up_to_its_torch_install() -> None:
    out = run_script("cuda", image="localhost/codeassist:cuda-torch-test", timeout_s=3600)
    version, _, cuda = out["torch"].partition(" cuda ")
    assert version.startswith("2.13.0")
    assert cuda not in ("", "None")  # PyPI's torch for Linux is the CUDA build
    assert out["ok"] == "cuda"
