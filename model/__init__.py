"""codeassist.model: model families, tokenizers, model files, the engine and the error classes.

The bottom layer: it imports no other codeassist package. Its entry points load on first use
(model/exports.py), so importing one light module (errors, fim_templates) never imports torch.
"""

from typing import TYPE_CHECKING

from codeassist.model.exports import lazy_exports

if TYPE_CHECKING:
    from codeassist.model.checkpoint import ModelFileError, load_model, read_info, save_model
    from codeassist.model.engine import Engine, GenerationRequest
    from codeassist.model.errors import CodeassistError, UserError, UserFacingError
    from codeassist.model.export import export_model
    from codeassist.model.store import list_models, resolve_model

__all__ = ["CodeassistError", "Engine", "GenerationRequest", "ModelFileError", "UserError", "UserFacingError",
           "export_model", "list_models", "load_model", "read_info", "resolve_model", "save_model"]

__getattr__ = lazy_exports(__name__, __file__)
