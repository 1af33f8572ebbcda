"""codeassist.remote: the team server (seed and OpenAI-compatible APIs, continuous batching,
prefix caching, limits, metrics), its wire schema, and the HTTP client the language server uses.

Entry points load on first use (model/exports.py): the language server's client never imports
FastAPI or the engine.
"""

from typing import TYPE_CHECKING

from codeassist.model.exports import lazy_exports

if TYPE_CHECKING:
    from codeassist.remote.app import create_app
    from codeassist.remote.client import RemoteClient, RemoteError
    from codeassist.remote.settings import RemoteSettings, ServerSettings

__all__ = ["RemoteClient", "RemoteError", "RemoteSettings", "ServerSettings", "create_app"]

__getattr__ = lazy_exports(__name__, __file__)
