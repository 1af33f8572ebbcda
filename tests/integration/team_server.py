"""`codeassist serve` on a family's tiny folder, in its own process on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

from tests.families_fixture import TinyFolder
from tests.remote.test_serve_command import free_port, wait_ready


@dataclass
class TeamServer:
    proc: subprocess.Popen[str]
    url: str

    def wait_ready(self, timeout_s: float = 180) -> None:
        wait_ready(self.proc, self.url, timeout_s)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


def start_team_server(tiny: TinyFolder) -> TeamServer:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "codeassist.cli", "serve", "--model", str(tiny.path), "--port",
                             str(port), "--device", "cpu", "--threads", "1", "--log-level", "warning",
                             "--request-timeout", "300"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "CODEASSIST_DEBUG": ""})
    return TeamServer(proc, f"http://127.0.0.1:{port}")
