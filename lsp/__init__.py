"""codeassist.lsp: the language server, its completion pipeline, workspace index and backends.

Entry points load on first use (model/exports.py): a remote-only server never imports torch.
"""

from typing import TYPE_CHECKING

from codeassist.model.exports import lazy_exports

if TYPE_CHECKING:
    from codeassist.lsp.client import EditorClient
    from codeassist.lsp.server import CodeassistServer, serve_stdio, serve_tcp
    from codeassist.lsp.settings import Settings, parse_settings

__all__ = ["CodeassistServer", "EditorClient", "Settings", "parse_settings", "serve_stdio", "serve_tcp"]

__getattr__ = lazy_exports(__name__, __file__)
