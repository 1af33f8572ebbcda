"""How codeassist measures a model: held-out loss, line exact match through the editor's pipeline,
and the harness that drives the real language server. The gate, the quantization report,
`codeassist eval` and the repository evaluation all use this package; training and quantization
import it, never the language server directly.

Modules: `loss` (held-out loss and perplexity), `lines` (how lines are cut from held-out files),
`exact` (line exact match through lsp.pipeline in-process: the one per-line scorer), `harness`
and `report` (the real server driven over stdio as an editor drives it, through pygls's
LanguageClient, and its figures), `repo` (the repository eval), `cli` (`codeassist eval`).
The line cases are re-exported here (they import nothing heavy); the rest is imported from its
module, so `codeassist eval` never loads torch.
"""

from codeassist.evaluation.lines import HeldOutFile, LineSample, RepoCase, line_samples

__all__ = ["HeldOutFile", "LineSample", "RepoCase", "line_samples"]
