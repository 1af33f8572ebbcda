import subprocess
import sys

import pytest

from codeassist.lsp.cli import parse_host_port
from codeassist.model.errors import UserError


def test_tcp_address_defaults_to_loopback() -> None:
    assert parse_host_port(":2087") == ("127.0.0.1", 2087)
    assert parse_host_port("0.0.0.0:9000") == ("0.0.0.0", 9000)
    for bad in ("2087", "host:port", "h:99999"):
        with pytest.raises(UserError):
            parse_host_port(bad)


def test_the_server_modules_do_not_import_torch() -> None:
    # a remote-only set-up must start without torch; only LocalBackend's loader imports it
    code = ("import sys, codeassist.lsp.cli, codeassist.lsp.server; "
            "from codeassist.lsp.server import CodeassistServer; from codeassist.lsp.settings import Settings; "
            "CodeassistServer(Settings(backend='remote')); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
