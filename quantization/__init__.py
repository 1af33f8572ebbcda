"""codeassist.quantization: writes int8, int4 (round to nearest, groupwise) and GPTQ model files;
the layers that run them live in model/, so the engine loads any model file alone.

Entry points load on first use (model/exports.py).
"""

from typing import TYPE_CHECKING

from codeassist.model.exports import lazy_exports

if TYPE_CHECKING:
    from codeassist.quantization.gptq import GPTQConfig, gptq_quantize
    from codeassist.quantization.quantize import Quantized, spec_for
    from codeassist.quantization.rtn import quantize_int4, quantize_int8

# `quantize` itself is codeassist.quantization.quantize.quantize (the name is its module's)
__all__ = ["GPTQConfig", "Quantized", "gptq_quantize", "quantize_int4", "quantize_int8", "spec_for"]

__getattr__ = lazy_exports(__name__, __file__)
