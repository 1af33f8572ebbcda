"""Generation: the Engine (one model, its KV cache with prefix reuse, one worker thread) and the
loop of the one decode step.

The editor case drives the design. Consecutive requests share almost all of their prompt (the
user typed a few characters), so the engine keeps the tokens whose keys and values sit in the
cache and prefills only what changed. The tokens it generated stay in the cache too, so
accepting a suggestion and asking again costs only the new tokens.

An Engine is not thread-safe: one worker thread owns it (`generate` holds a lock). Cancellation
is a flag read after every token.

Each step chooses a token (model/chooser.py: healing constraint, banned ids, greedy or sampling)
and emits it through the text stream (model/textstream.py), whose stop rules (model/stops.py)
end the output as they fire; the team server's scheduler emits through the same pieces.
Speculation (`GenerationRequest.speculation`, off by default; model/speculative.py) drafts tokens
by prompt lookup or with a smaller draft model and verifies them in one forward pass; every
emitted token, drafted or not, passes the same stop checks, so a stop inside an accepted draft
ends the output there. The per-token cost is one forward pass over a static KV cache plus one
host synchronisation, for the token id that the stop rules must read (one per verify pass when
speculating).

The engine carries its model's tokenizer (`engine.tokenizer`, model/tokenization.py): ours for
our model files, a Hugging Face tokenizer.json for the open families. Nothing here assumes
GPT-2 ids: ends come from `tokenizer.stop_ids`, and the other special ids are never chosen.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from codeassist.model import engine_steps as steps
from codeassist.model.checkpoint import ModelFileError, ModelInfo, load_model
from codeassist.model.chooser import TokenChooser, mask_banned
from codeassist.model.decoding import CopyParams, GenerationRequest, GenerationResult, choose_copy, emit
from codeassist.model.hf_tokenizer import HFTokenizer
from codeassist.model.speculative import (
    Drafter,
    DraftModel,
    common_prefix,
    should_speculate,
    verify_greedy,
    verify_sampling,
)
from codeassist.model.stops import StopRules
from codeassist.model.store import resolve_model
from codeassist.model.textstream import TextStream
from codeassist.model.tokenization import (
    Tokenizer,
    TokenizerFileError,
    codeassist_tokenizer,
    resolve,
    tokenizer_from_metadata,
)

if TYPE_CHECKING:
    from codeassist.model.causal_lm import CausalLM  # every family's interface (model/causal_lm.py)

__all__ = ["MAX_CONTEXT", "CopyParams", "Engine", "GenerationRequest", "GenerationResult", "StopRules",
           "default_dtype", "fit_to_context", "load_any", "pick_device"]

log = logging.getLogger(__name__)

# The longest context the engine allocates keys and values for: a model trained on 32k positions
# (Qwen2.5-Coder) would otherwise take 32k cache slots per layer; a completion prompt needs far fewer.
MAX_CONTEXT = 4096


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA GPU is available")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def default_dtype(device: torch.device) -> torch.dtype:
    # bf16 on CUDA; fp32 on CPU, where eager bf16 is slower for batch-1 decoding
    return torch.bfloat16 if device.type == "cuda" else torch.float32


class Engine:
    def __init__(self, model: CausalLM, device: torch.device | None = None, dtype: torch.dtype | None = None,
                 info: ModelInfo | None = None, name: str = "custom", draft_model: CausalLM | None = None,
                 tokenizer: Tokenizer | None = None) -> None:
        self.device = device or next(model.parameters()).device
        self.dtype = dtype or default_dtype(self.device)
        self.model = steps.prepare(model, self.device, self.dtype)
        self.config = model.config
        self.tokenizer = resolve(tokenizer)  # ours unless the model came with its own
        self.context = min(self.config.block_size, MAX_CONTEXT)  # prompt + output, in tokens
        self.info = info
        self.name = name
        self._cached: list[int] = []  # tokens whose keys/values are in row 0 of the cache
        self._lock = threading.Lock()
        self.draft: DraftModel | None = None
        if draft_model is not None:
            self.set_draft_model(draft_model)

    @classmethod
    def load(cls, model: str | Path = "default", device: str = "auto",
             dtype: torch.dtype | None = None, draft: str | Path | None = None) -> Engine:
        """Load a model by name (`default`, `gpt2`, a saved name) or path; raises ModelFileError.

        `draft` names a smaller model with the same tokenizer for draft-model speculation.
        """
        dev = pick_device(device)
        want = dtype or default_dtype(dev)
        lm, info, name, tokenizer = load_any(model, dev, want)
        draft_lm = None
        if draft is not None:
            draft_lm, _, _, draft_tok = load_any(draft, dev, want)
            if draft_tok.to_metadata() != tokenizer.to_metadata():
                raise ModelFileError(f"the draft model {draft} has another tokenizer than the model; "
                                     "speculation needs the same one")
        return cls(lm, dev, dtype, info=info, name=name, draft_model=draft_lm, tokenizer=tokenizer)

    @property
    def context_tokens(self) -> int:
        """Prompt + completion must fit this (the model's context, capped at MAX_CONTEXT)."""
        return self.context

    def set_draft_model(self, model: CausalLM | None) -> None:
        """The drafter for `SpeculationParams(method="draft")`; it must share the tokenizer."""
        if model is None:
            self.draft = None
            return
        if model is self.model:
            raise ValueError("the draft model must be a separate model: it keeps its own KV cache")
        if model.config.vocab_size != self.config.vocab_size:
            raise ValueError(f"the draft model's vocabulary ({model.config.vocab_size}) differs from the "
                             f"model's ({self.config.vocab_size}); it must use the same tokenizer")
        self.draft = DraftModel(model, self.device, self.dtype, context=self.context)

    def reset_prefix(self) -> None:
        """Forget the cached prompt, so the next request prefills from scratch (benchmarks)."""
        self._cached = []
        if self.draft is not None:
            self.draft._cached = []

    # -- the pieces (small enough to test or compile alone) -------------------------------------

    def _ensure_cache(self, batch_size: int) -> None:
        if self.model.kv_batch_size != batch_size:
            self.model.setup_kv_cache(batch_size, self.context, dtype=self.dtype)
            self._cached = []

    def prefill(self, ids: list[int], start_pos: int) -> torch.Tensor:
        """Run ids at positions start_pos.. through the model (row 0); logits of the last, (vocab,)."""
        return steps.prefill(self.model, ids, start_pos, self.device)

    def decode_one_token(self, token: int, pos: int) -> torch.Tensor:
        return steps.decode_one_token(self.model, token, pos, self.device)

    def score_tokens(self, ids: list[int], start_pos: int) -> torch.Tensor:
        """Logits after each of ids at positions start_pos.. (row 0), (len(ids), vocab): a verify pass."""
        return steps.score_tokens(self.model, ids, start_pos, self.device)

    # -- generation ----------------------------------------------------------------------------

    def generate(self, request: GenerationRequest, cancel: threading.Event | None = None) -> GenerationResult:
        """Batch-1 generation with prefix reuse. Thread-safe by a lock; the model is not re-entrant."""
        with self._lock, torch.inference_mode():
            return self._generate(request, cancel)

    def _start(self, req: GenerationRequest) -> tuple[list[int], int, bool, int, torch.Tensor]:
        """Fit the prompt to the context and prefill what the cache does not hold:
        (prompt, max new tokens, truncated, tokens reused, logits after the prompt)."""
        prompt, max_new, truncated = fit_to_context(list(req.prompt), req.stop.max_new_tokens, self.context)
        if not prompt:
            raise ValueError("the prompt is empty")
        if req.speculation.method == "draft" and self.draft is None:
            raise ValueError("draft-model speculation was asked for, but the engine has no draft model")
        self._ensure_cache(1)
        reuse = min(common_prefix(self._cached, prompt), len(prompt) - 1)  # refeed >= 1 for logits
        self._cached = self._cached[:reuse]
        logits = self.prefill(prompt[reuse:], reuse)
        self._cached = list(prompt)
        return prompt, max_new, truncated, reuse, logits

    def _generate(self, req: GenerationRequest, cancel: threading.Event | None) -> GenerationResult:
        t0 = time.perf_counter()
        rules = req.stop
        prompt, max_new, truncated, reuse, first_logits = self._start(req)
        # the budget is for decoding: a cold prompt's prefill is paid once (the next keystroke
        # reuses it), so it must not eat the time of the suggestion it was paid for
        deadline = time.perf_counter() + rules.time_budget_s if rules.time_budget_s else None
        logits: torch.Tensor | None = first_logits
        res = GenerationResult(tokens=[], text="", stop_reason="max_tokens" if max_new > 0 else "context",
                               prompt_tokens=len(prompt), reused_tokens=reuse, truncated_prompt=truncated,
                               prefill_ms=(time.perf_counter() - t0) * 1e3)
        chooser = TokenChooser(self.tokenizer, req.sampling, req.forced_prefix, req.seed, self.device,
                               rules.stop_on_eos)
        stream = TextStream(req.forced_prefix, rules, self.tokenizer)
        drafter = Drafter(req.speculation, prompt, self.draft) if should_speculate(req.speculation, 1) else None
        out = res.tokens
        pos = len(prompt)  # the position of the next token fed to the model
        pending: list[int] = []  # tokens chosen by a verify pass, not yet emitted
        stopped = max_new == 0
        if req.copy.candidates and not stopped:
            stopped = self._copy(req, chooser.constrain(first_logits), pos, max_new, stream, res)
            res.first_token_ms = (time.perf_counter() - t0) * 1e3 if stopped else 0.0
        while not stopped:
            if pending:
                from_draft = len(pending) - 1  # all but the last came from the draft
            else:  # choose the next token from the logits of the last step
                assert logits is not None
                pending, from_draft = [chooser.choose(logits)], 0
            for j, token in enumerate(pending):
                if not out and not res.first_token_ms:
                    res.first_token_ms = (time.perf_counter() - t0) * 1e3
                reason, _ = emit(token, stream, self.tokenizer, rules.stop_on_eos)
                if reason == "eos":
                    res.stop_reason, stopped = reason, True
                    break
                out.append(token)
                res.accepted_tokens += j < from_draft
                if reason is None and cancel is not None and cancel.is_set():
                    reason = "cancelled"
                elif reason is None and deadline is not None and time.perf_counter() > deadline:
                    reason = "time"
                elif reason is None and len(out) >= max_new:
                    reason = "max_tokens"
                elif reason is None and j == len(pending) - 1 and pos >= self.context:  # no slot to feed it
                    reason = "context"
                if reason is not None:
                    res.stop_reason, stopped = reason, True
                    break
            if stopped:
                break
            last, pending = pending[-1], []
            logits, pending, pos = self._advance(last, pos, out, max_new, drafter, chooser, req, res)
        stream.finish()
        res.text = stream.output
        res.total_ms = (time.perf_counter() - t0) * 1e3
        res.verify_steps = drafter.steps if drafter else 0
        return res

    def _advance(self, last: int, pos: int, out: list[int], max_new: int, drafter: Drafter | None,
                 chooser: TokenChooser, req: GenerationRequest, res: GenerationResult
                 ) -> tuple[torch.Tensor | None, list[int], int]:
        """Feed `last`: one decode step, or a verify pass of a draft after it.
        (logits for the next choice or None, tokens the verify pass chose, the next position)."""
        # room for drafts: the context, and the tokens still wanted after `last`
        room = min(self.context - 1 - pos, max_new - len(out) - 1)
        draft: list[int] = []
        q: torch.Tensor | None = None
        if drafter is not None and room > 0 and not chooser.healing:
            draft, q = drafter.propose(out, min(room, drafter.k), req.sampling, chooser.gen)
        if drafter is None or not draft:
            logits = self.decode_one_token(last, pos)
            self._cached.append(last)
            return logits, [], pos + 1
        # the same ids are barred as when decoding one token at a time, so a verified draft
        # equals plain decoding (greedy) or its distribution (sampling)
        scores = mask_banned(self.score_tokens([last, *draft], pos), self.tokenizer,
                             req.stop.stop_on_eos)  # (1 + k, vocab)
        if req.sampling.greedy:
            n, nxt = verify_greedy(scores, draft)
        else:
            n, nxt = verify_sampling(scores, draft, req.sampling, q, chooser.gen)
        drafter.update(len(draft), n)
        res.drafted_tokens += len(draft)
        self._cached.extend([last, *draft[:n]])  # the rejected drafts' cache slots are stale
        return None, [*draft[:n], nxt], pos + 1 + n

    def _copy(self, req: GenerationRequest, logits: torch.Tensor, pos: int, max_new: int,
              stream: TextStream, res: GenerationResult) -> bool:
        """Take a copy candidate as the whole output, if the model agrees; True when taken."""
        chosen, res.copy_scores = choose_copy(self.score_tokens, self.tokenizer, logits, req, pos,
                                              min(max_new, self.context - pos))
        if chosen is None:
            return False
        ids, res.copied = chosen  # the suggestion is that line: one the user can check at a glance
        res.tokens.extend(ids[:-1])
        self._cached.extend(ids[:-1])  # their keys and values are in the cache: typing on reuses them
        for token in ids[:-1]:
            stream.push(token)
        res.stop_reason = "stop"
        return True


def load_any(model: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
             ) -> tuple[CausalLM, ModelInfo | None, str, Tokenizer]:
    """(model, its file's info, display name, its tokenizer) for a name, a model file or a
    Hugging Face folder; raises ModelFileError with one sentence.

    A folder whose config.json says gpt2 loads into our vocabulary (model/hf_gpt2.py, our
    tokenizer); any other family (Llama, Qwen2, GPTBigCode) through model/families.py, with the
    folder's tokenizer.json. A model file carries its tokenizer in its metadata."""
    path, name = resolve_model(model)
    try:
        if path.is_dir():
            from codeassist.model.families import family_of, load_pretrained

            if family_of(path) == "gpt2":
                from codeassist.model.hf_gpt2 import load_hf_gpt2

                return load_hf_gpt2(path), None, name, codeassist_tokenizer()
            tokenizer = HFTokenizer.from_folder(path)  # before the weights: a bad folder fails fast
            lm, _ = load_pretrained(path, device, dtype)
            return lm, None, name, tokenizer
        lm, info = load_model(path)
        meta = getattr(info, "meta", None) or {"tokenizer": info.tokenizer}
        return lm, info, name, tokenizer_from_metadata(meta)
    except TokenizerFileError as exc:  # a folder's message names its files; a model file's does not
        raise ModelFileError(str(exc) if path.is_dir() else f"{path}: {exc}") from None


def fit_to_context(prompt: list[int], max_new: int, block_size: int) -> tuple[list[int], int, bool]:
    """Keep the tokens nearest the cursor (the end) so prompt + max_new fits the context."""
    max_new = max(0, min(max_new, block_size - 1))
    room = block_size - max_new
    if len(prompt) > room:
        return prompt[len(prompt) - room:], max_new, True
    return prompt, max_new, False
