"""Generation: prefill, one-token decode steps, sampling, stop rules, and KV prefix reuse.

The editor case drives the design. Consecutive requests share almost all of their prompt (the
user typed a few characters), so the engine keeps the tokens whose keys and values sit in the
cache and prefills only what changed. The tokens it generated stay in the cache too, so
accepting a suggestion and asking again costs only the new tokens.

An Engine is not thread-safe: one worker thread owns it. Cancellation is a flag read after
every token.

Speculation (`GenerationRequest.speculation`, off by default; model/speculative.py) drafts tokens
by prompt lookup or with a smaller draft model and verifies them in one forward pass. Every
emitted token, drafted or not, passes the same stop checks, so a stop inside an accepted draft
ends the output there. The per-token cost is one forward pass over a static KV cache plus one
host synchronisation, for the token id that the stop rules must read (one per verify pass when
speculating).

The engine carries its model's tokenizer (`engine.tokenizer`, model/tokenization.py): ours for
our model files, a Hugging Face tokenizer.json for the open families. Nothing here assumes
GPT-2 ids: ends come from `tokenizer.stop_ids`, and the other special ids (control tokens, the
embedding's padding rows) are masked out while decoding, so a completion is always text.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from codeassist.model.checkpoint import ModelFileError, ModelInfo, load_model
from codeassist.model.healing import PrefixConstraint
from codeassist.model.sampling import SamplingParams, sample_next
from codeassist.model.speculative import (
    Drafter,
    DraftModel,
    SpeculationParams,
    common_prefix,
    should_speculate,
    verify_greedy,
    verify_sampling,
)
from codeassist.model.stops import StopRules
from codeassist.model.store import resolve_model
from codeassist.model.tokenization import (
    HFTokenizer,
    Tokenizer,
    TokenizerFileError,
    codeassist_tokenizer,
    resolve,
    tokenizer_from_metadata,
)

if TYPE_CHECKING:
    from codeassist.model.causal_lm import CausalLM  # every family's interface (model/causal_lm.py)

log = logging.getLogger(__name__)

# The longest context the engine allocates keys and values for: a model trained on 32k positions
# (Qwen2.5-Coder) would otherwise take 32k cache slots per layer; a completion prompt needs far fewer.
MAX_CONTEXT = 4096


@dataclass(frozen=True)
class CopyParams:
    """Copy candidates (model/copy.py): rests of the line, each beginning with forced_prefix.

    The model scores each with its line end in one forward pass; the best is taken when its mean
    log-probability per token is at least `min_logprob` (a candidate the model finds unlikely is
    not taken), and it is the whole output. Without candidates nothing changes.
    """
    candidates: tuple[str, ...] = ()
    # Tuned on requests and urllib3 (300 lines, benchmarks/README.md): the embedded model's scores
    # barely tell right candidates from wrong ones, so it only vetoes what it finds absurd.
    min_logprob: float = -8.0


@dataclass(frozen=True)
class GenerationRequest:
    prompt: tuple[int, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: StopRules = field(default_factory=StopRules)
    forced_prefix: bytes = b""  # token healing: the output must begin with these bytes
    seed: int | None = None
    speculation: SpeculationParams = field(default_factory=SpeculationParams)  # default: off
    copy: CopyParams = field(default_factory=CopyParams)  # default: no candidates


@dataclass
class GenerationResult:
    tokens: list[int]
    text: str  # generated text after stop-string trimming (begins with forced_prefix, if any)
    stop_reason: str  # eos | stop | max_tokens | time | cancelled | context
    prompt_tokens: int
    reused_tokens: int = 0
    truncated_prompt: bool = False
    prefill_ms: float = 0.0
    first_token_ms: float = 0.0
    total_ms: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    drafted_tokens: int = 0  # speculation: tokens proposed to the verifier
    accepted_tokens: int = 0  # ... of which kept and returned in `tokens` (a stop can cut a run short)
    verify_steps: int = 0  # forward passes that verified a draft
    copied: str | None = None  # the copy candidate taken, if any
    copy_scores: tuple[float, ...] = ()  # mean log-probability per token of each candidate


class CancelledError(Exception):
    pass


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
        self.model = _prepare(model, self.device, self.dtype)
        self.config = model.config
        self.tokenizer = resolve(tokenizer)  # ours unless the model came with its own
        self.context = min(self.config.block_size, MAX_CONTEXT)  # prompt + output, in tokens
        self._masks: dict[bool, torch.Tensor | None] = {}
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
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        pos = torch.arange(start_pos, start_pos + len(ids), device=self.device).unsqueeze(0)
        logits: torch.Tensor = self.model(x, pos, start_pos + len(ids), last_only=True)[0, -1].float()
        return logits

    def decode_one_token(self, token: int, pos: int) -> torch.Tensor:
        x = torch.tensor([[token]], dtype=torch.long, device=self.device)
        p = torch.tensor([[pos]], device=self.device)
        logits: torch.Tensor = self.model(x, p, pos + 1)[0, -1].float()
        return logits

    def score_tokens(self, ids: list[int], start_pos: int) -> torch.Tensor:
        """Logits after each of ids at positions start_pos.. (row 0), (len(ids), vocab): a verify pass."""
        x = torch.tensor([ids], dtype=torch.long, device=self.device)
        pos = torch.arange(start_pos, start_pos + len(ids), device=self.device).unsqueeze(0)
        logits: torch.Tensor = self.model(x, pos, start_pos + len(ids))[0].float()
        return logits

    # -- generation ----------------------------------------------------------------------------

    def generate(self, request: GenerationRequest, cancel: threading.Event | None = None) -> GenerationResult:
        """Batch-1 generation with prefix reuse. Thread-safe by a lock; the model is not re-entrant."""
        with self._lock, torch.inference_mode():
            return self._generate(request, cancel)

    def _generate(self, req: GenerationRequest, cancel: threading.Event | None) -> GenerationResult:
        t0 = time.perf_counter()
        deadline = t0 + req.stop.time_budget_s if req.stop.time_budget_s else None
        prompt, max_new, truncated = fit_to_context(list(req.prompt), req.stop.max_new_tokens,
                                                    self.context)
        if not prompt:
            raise ValueError("the prompt is empty")
        spec = req.speculation
        if spec.method == "draft" and self.draft is None:
            raise ValueError("draft-model speculation was asked for, but the engine has no draft model")
        self._ensure_cache(1)
        reuse = min(common_prefix(self._cached, prompt), len(prompt) - 1)  # refeed >= 1 for logits
        self._cached = self._cached[:reuse]
        logits: torch.Tensor | None = self.prefill(prompt[reuse:], reuse)
        self._cached = list(prompt)
        prefill_ms = (time.perf_counter() - t0) * 1e3
        gen = _generator(req.seed, self.device)
        constraint = PrefixConstraint(req.forced_prefix, self.tokenizer) if req.forced_prefix else None
        drafter = Drafter(spec, prompt, self.draft) if should_speculate(spec, 1) else None
        out: list[int] = []
        decoder = _TextDecoder(self.tokenizer)
        reason = "max_tokens" if max_new > 0 else "context"
        first_ms = 0.0
        pos = len(prompt)  # the position of the next token fed to the model
        pending: list[int] = []  # tokens chosen by a verify pass, not yet emitted
        drafted = accepted = 0
        stopped = max_new == 0
        copied: str | None = None
        copy_scores: tuple[float, ...] = ()
        if req.copy.candidates and not stopped:
            assert logits is not None
            chosen, copy_scores = self._choose_copy(req, logits if constraint is None else constraint.mask(logits),
                                               pos, max_new)
            if chosen is not None:  # the suggestion is that line: one the user can check at a glance
                ids, copied = chosen
                out = ids[:-1]
                self._cached.extend(out)  # their keys and values are in the cache: typing on reuses them
                for token in out:
                    decoder.push(token)
                reason, stopped, first_ms = "stop", True, (time.perf_counter() - t0) * 1e3
        while not stopped:
            if not pending:  # choose the next token from the logits of the last step
                assert logits is not None
                if constraint is not None and not constraint.done:
                    logits = constraint.mask(logits)
                logits = self._mask_specials(logits, req.stop.stop_on_eos)
                pending = [sample_next(logits, req.sampling, gen)]
                if constraint is not None:
                    constraint.advance(pending[0])
                from_draft = 0
            else:
                from_draft = len(pending) - 1  # all but the last came from the draft
            for j, token in enumerate(pending):
                if not out and not first_ms:
                    first_ms = (time.perf_counter() - t0) * 1e3
                if req.stop.stop_on_eos and self._ends(token):
                    reason, stopped = "eos", True
                    break
                out.append(token)
                accepted += j < from_draft
                if _find_stop(decoder.push(token), req.stop, _forced_len(req), final=False) is not None:
                    reason, stopped = "stop", True
                elif cancel is not None and cancel.is_set():
                    reason, stopped = "cancelled", True
                elif deadline is not None and time.perf_counter() > deadline:
                    reason, stopped = "time", True
                elif len(out) >= max_new:
                    stopped = True
                elif j == len(pending) - 1 and pos >= self.context:  # no slot to feed it
                    reason, stopped = "context", True
                if stopped:
                    break
            if stopped:
                break
            last, pending = pending[-1], []
            # room for drafts: the context, and the tokens still wanted after `last`
            room = min(self.context - 1 - pos, max_new - len(out) - 1)
            draft: list[int] = []
            q: torch.Tensor | None = None
            if drafter is not None and room > 0 and (constraint is None or constraint.done):
                draft, q = drafter.propose(out, min(room, drafter.k), req.sampling, gen)
            if drafter is None or not draft:
                logits = self.decode_one_token(last, pos)
                self._cached.append(last)
                pos += 1
                continue
            # the same ids are barred as when decoding one token at a time, so a verified draft
            # equals plain decoding (greedy) or its distribution (sampling)
            scores = self._mask_specials(self.score_tokens([last, *draft], pos), req.stop.stop_on_eos)  # (1 + k, vocab)
            if req.sampling.greedy:
                n, nxt = verify_greedy(scores, draft)
            else:
                n, nxt = verify_sampling(scores, draft, req.sampling, q, gen)
            drafter.update(len(draft), n)
            drafted += len(draft)
            self._cached.extend([last, *draft[:n]])  # the rejected drafts' cache slots are stale
            pos += 1 + n
            pending, logits = [*draft[:n], nxt], None
        text = decoder.text()
        cut = _find_stop(text, req.stop, _forced_len(req))
        if cut is not None:
            text = text[:cut]
        total_ms = (time.perf_counter() - t0) * 1e3
        return GenerationResult(tokens=out, text=text, stop_reason=reason, prompt_tokens=len(prompt),
                                reused_tokens=reuse, truncated_prompt=truncated, prefill_ms=prefill_ms,
                                first_token_ms=first_ms, total_ms=total_ms, drafted_tokens=drafted,
                                accepted_tokens=accepted, verify_steps=drafter.steps if drafter else 0,
                                copied=copied, copy_scores=copy_scores)

    def _choose_copy(self, req: GenerationRequest, logits: torch.Tensor, pos: int, max_new: int
                     ) -> tuple[tuple[list[int], str] | None, tuple[float, ...]]:
        """Score the copy candidates after the prompt; ((ids, text) of the one taken, or None; scores).

        Each candidate is scored with a newline after it (the model must also agree that the line
        ends there). `logits` are the healing constraint's, so the first token's probability is
        given the text the user typed (every candidate spells it out). The chosen one is scored
        last, so the cache holds its keys and values past the prompt for the next keystroke.
        """
        first = torch.log_softmax(logits, dim=-1)
        room = min(max_new, self.context - pos)
        forced = req.forced_prefix
        scored: list[tuple[float, list[int], str]] = []
        for text in req.copy.candidates:
            ids = self.tokenizer.encode(text + "\n")
            if not text.encode("utf-8").startswith(forced) or len(ids) < 2 or len(ids) > room:
                scored.append((float("-inf"), ids, text))
                continue
            rows = torch.log_softmax(self.score_tokens(ids[:-1], pos), dim=-1)  # (len - 1, vocab)
            total = float(first[ids[0]]) + float(rows.gather(1, torch.tensor(ids[1:]).unsqueeze(1)).sum())
            scored.append((total / len(ids), ids, text))
        scores = tuple(s for s, _, _ in scored)
        best = max(range(len(scored)), key=lambda i: scored[i][0])
        score, ids, text = scored[best]
        if score < req.copy.min_logprob:
            return None, scores
        if best != len(scored) - 1:
            self.score_tokens(ids[:-1], pos)  # put the chosen candidate's keys and values back
        return (ids, text), scores

    def _ends(self, token: int) -> bool:
        """A stop id ends the completion; so does any other special id that a path without the
        mask chose (a verified draft): it has no text."""
        return token in self.tokenizer.stop_ids or self.tokenizer.is_special(token)

    def _mask_specials(self, logits: torch.Tensor, stop_on_eos: bool) -> torch.Tensor:
        """Logits with the ids that may not be chosen set to -inf: the special ids that are not
        stops (control tokens, the embedding's padding rows), and without the end-of-text stop
        (`stop_on_eos` False) the stops too. In place: each step's logits are its own (a copy
        of 50k floats per token cost more than the masking)."""
        if stop_on_eos not in self._masks:
            t = self.tokenizer
            size = logits.size(-1)
            ban = {i for i in t.special_ids() if i < size} | set(range(min(t.n_vocab, size), size))
            if stop_on_eos:
                ban -= t.stop_ids
            self._masks[stop_on_eos] = torch.tensor(sorted(ban), device=logits.device) if ban else None
        idx = self._masks[stop_on_eos]
        if idx is None:
            return logits
        return logits.index_fill_(-1, idx, float("-inf"))

    def generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Several prompts decoded together in one batch (no prefix reuse).

        Speculation is for one sequence: a lone request that asks for it takes the batch-1 path;
        in a batch of several it is switched off (see `should_speculate`).
        """
        with self._lock, torch.inference_mode():
            if len(requests) == 1 and should_speculate(requests[0].speculation, 1):
                return [self._generate(requests[0], None)]
            return self._generate_batch(requests)

    def _generate_batch(self, reqs: list[GenerationRequest]) -> list[GenerationResult]:
        t0 = time.perf_counter()
        B = len(reqs)
        fitted = [fit_to_context(list(r.prompt), r.stop.max_new_tokens, self.context) for r in reqs]
        if any(not p for p, _, _ in fitted):
            raise ValueError("a prompt is empty")
        self._ensure_cache(B)
        self._cached = []
        lengths = [len(p) for p, _, _ in fitted]
        T = max(lengths)
        # right-pad: slots past a row's length are masked, then overwritten by its own decode steps
        pad = self.tokenizer.eot_id
        x = torch.tensor([p + [pad] * (T - len(p)) for p, _, _ in fitted], device=self.device)
        pos = torch.arange(T, device=self.device).unsqueeze(0)
        logits = self.model.last_token_logits(x, pos, T, lengths).float()  # (B, vocab)
        prefill_ms = (time.perf_counter() - t0) * 1e3
        gens = [_generator(r.seed, self.device) for r in reqs]
        outs: list[list[int]] = [[] for _ in reqs]
        decoders = [_TextDecoder(self.tokenizer) for _ in reqs]
        reasons = ["max_tokens"] * B
        done = [mx == 0 for _, mx, _ in fitted]
        constraints = [PrefixConstraint(r.forced_prefix, self.tokenizer) if r.forced_prefix else None for r in reqs]
        cur = list(lengths)
        step_tokens = [pad] * B
        while not all(done):
            for b in range(B):
                if done[b]:
                    continue
                row = logits[b]
                c = constraints[b]
                if c is not None and not c.done:
                    row = c.mask(row)
                row = self._mask_specials(row, reqs[b].stop.stop_on_eos)
                token = sample_next(row, reqs[b].sampling, gens[b])
                if c is not None:
                    c.advance(token)
                step_tokens[b] = token
                if reqs[b].stop.stop_on_eos and self._ends(token):
                    done[b], reasons[b] = True, "eos"
                    continue
                outs[b].append(token)
                text = decoders[b].push(token)
                if _find_stop(text, reqs[b].stop, _forced_len(reqs[b]), final=False) is not None:
                    done[b], reasons[b] = True, "stop"
                elif len(outs[b]) >= fitted[b][1]:
                    done[b] = True
                elif cur[b] >= self.context:
                    done[b], reasons[b] = True, "context"
            if all(done):
                break
            # finished rows still step (their output is ignored) so the batch stays rectangular
            x = torch.tensor([[t] for t in step_tokens], device=self.device)
            p = torch.tensor([[min(c, self.context - 1)] for c in cur], device=self.device)
            logits = self.model(x, p, min(max(cur) + 1, self.context))[:, -1].float()
            cur = [c + 1 for c in cur]
        results = []
        total_ms = (time.perf_counter() - t0) * 1e3
        for b, r in enumerate(reqs):
            text = decoders[b].text()
            cut = _find_stop(text, r.stop, _forced_len(r))
            results.append(GenerationResult(tokens=outs[b], text=text if cut is None else text[:cut],
                                            stop_reason=reasons[b], prompt_tokens=lengths[b],
                                            truncated_prompt=fitted[b][2], prefill_ms=prefill_ms,
                                            total_ms=total_ms))
        return results


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


def _prepare(model: CausalLM, device: torch.device, dtype: torch.dtype) -> CausalLM:
    model = model.to(device)
    if any(p.is_floating_point() and p.dtype != dtype for p in model.parameters()):
        model = model.to(dtype=dtype)
    return model.eval()


def fit_to_context(prompt: list[int], max_new: int, block_size: int) -> tuple[list[int], int, bool]:
    """Keep the tokens nearest the cursor (the end) so prompt + max_new fits the context."""
    max_new = max(0, min(max_new, block_size - 1))
    room = block_size - max_new
    if len(prompt) > room:
        return prompt[len(prompt) - room:], max_new, True
    return prompt, max_new, False


def _forced_len(req: GenerationRequest) -> int:
    return len(req.forced_prefix.decode("utf-8", errors="ignore"))


def _find_stop(text: str, rules: StopRules, skip: int, final: bool = True) -> int | None:
    """Index in text where the stop rules end it, judged on text[skip:] (the forced prefix never
    stops), or None."""
    cut, _ = rules.cut(text[skip:], final)
    return None if cut is None else skip + cut


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


class _TextDecoder:
    """Incremental bytes → text; an incomplete UTF-8 sequence at the end waits for its next token."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._buf = bytearray()
        self._token_bytes = tokenizer.token_bytes

    def push(self, token: int) -> str:
        self._buf += self._token_bytes(token)
        return self.text()

    def text(self) -> str:
        # a character split across tokens waits for the rest, even after an invalid byte earlier
        return codecs.getincrementaldecoder("utf-8")("replace").decode(bytes(self._buf), final=False)
