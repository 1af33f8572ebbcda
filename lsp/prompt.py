"""The editor's cursor into the one prompt builder (model/prompting.py).

The language server's context adds what the plain path lacks: other files' snippets, formatted as
the document language's comments, and the window's absolute offset, so the prefix is cut at
places that stay put while the user types (the engine's KV cache of the earlier tokens stays valid).
Everything else is the builder's, shared with `codeassist complete` and the team server.
"""

from __future__ import annotations

from codeassist.lsp.context import CompletionContext
from codeassist.lsp.snippets import format_snippet
from codeassist.model.prompting import Prompt, build_prompt, warm_up_prompts
from codeassist.model.tokenization import Tokenizer

# lsp/server.py warms the tables through this module
__all__ = ["Prompt", "prompt_for", "warm_up_prompts"]


def prompt_for(ctx: CompletionContext, max_prompt_tokens: int, heal: bool = True,
               tokenizer: Tokenizer | None = None) -> Prompt:
    """The prompt for `ctx` in at most `max_prompt_tokens` tokens of `tokenizer` (ours when None)."""
    context = tuple(format_snippet(s, ctx.language) for s in ctx.snippets)
    return build_prompt(ctx.prefix, ctx.suffix, max_prompt_tokens, heal, tokenizer, context=context,
                        prefix_offset=ctx.prefix_offset)
