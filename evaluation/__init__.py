"""How codeassist measures a model: held-out loss, line exact match through the editor's pipeline,
and the harness that drives the real language server. The gate, the quantization report,
`codeassist eval` and the repository evaluation all use this package; training and quantization
import it, never the language server directly."""
