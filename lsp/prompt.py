"""The editor's cursor into the one prompt builder (model/prompting.py).

The language server's context adds what the plain path lacks: other files' snippets, formatted as
the document language's comments (or, for a model trained on a repository layout such as
Qwen2.5-Coder's, as repository files before the FIM prompt), and the window's absolute offset,
so the prefix is cut at places that stay put while the user types (the engine's KV cache of the
earlier tokens stays valid).
Everything else is the builder's, shared with `codeassist complete` and the team server.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from codeassist.lsp.context import CompletionContext
from codeassist.lsp.snippets import format_snippet
from codeassist.model.prompting import Prompt, RepoContext, build_prompt, warm_up_prompts
from codeassist.model.tokenization import Tokenizer

# lsp/server.py warms the tables through this module
__all__ = ["Prompt", "prompt_for", "repo_context", "warm_up_prompts"]


def prompt_for(ctx: CompletionContext, max_prompt_tokens: int, heal: bool = True,
               tokenizer: Tokenizer | None = None) -> Prompt:
    """The prompt for `ctx` in at most `max_prompt_tokens` tokens of `tokenizer` (ours when None)."""
    context = tuple(format_snippet(s, ctx.language) for s in ctx.snippets)
    return build_prompt(ctx.prefix, ctx.suffix, max_prompt_tokens, heal, tokenizer, context=context,
                        prefix_offset=ctx.prefix_offset, repo=repo_context(ctx))


def repo_context(ctx: CompletionContext) -> RepoContext:
    """The snippets as repository files, for a model trained on a repository layout: the
    repository is named after the document's folder, and the document by its file name (as the
    open files' snippets are)."""
    path = unquote(urlsplit(ctx.uri).path)
    folder, _, name = path.rstrip("/").rpartition("/")
    return RepoContext(name=folder.rpartition("/")[2], files=tuple((s.path, s.text) for s in ctx.snippets),
                       path=name)
