"""The one decode step's data and its shared pieces: what a generation is asked for and what it
returns, how an emitted token is judged (end of text, then the text stream's stop rules), and
the copy choice (a candidate line scored in one pass instead of decoded).

`Engine.generate` (plain and speculative) and the team server's scheduler emit every token
through `emit`, so a stop fires the same way on every path: as the token arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from codeassist.model.chooser import ends_output
from codeassist.model.sampling import SamplingParams
from codeassist.model.speculative import SpeculationParams
from codeassist.model.stops import StopRules
from codeassist.model.textstream import TextStream
from codeassist.model.tokenization import Tokenizer

__all__ = ["CopyParams", "GenerationRequest", "GenerationResult", "choose_copy", "emit"]


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
    text: str  # generated text, cut where a stop rule fired (begins with forced_prefix, if any)
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


def emit(token: int, stream: TextStream, tokenizer: Tokenizer, stop_on_eos: bool = True) -> tuple[str | None, str]:
    """Judge an emitted token: ("eos", "") when it ends the output (it is not part of it), else
    ("stop" when a stop rule fired, or None; the text now safe to show)."""
    if stop_on_eos and ends_output(tokenizer, token):
        return "eos", ""
    delta = stream.push(token)
    return ("stop" if stream.stopped else None), delta


def choose_copy(score: Callable[[list[int], int], torch.Tensor], tokenizer: Tokenizer, logits: torch.Tensor,
                req: GenerationRequest, pos: int, room: int
                ) -> tuple[tuple[list[int], str] | None, tuple[float, ...]]:
    """Score the copy candidates after the prompt; ((ids, text) of the one taken, or None; scores).

    Each candidate is scored with a newline after it (the model must also agree that the line
    ends there) by `score(ids, pos)` (a verify pass). `logits` are the healing constraint's, so
    the first token's probability is given the text the user typed (every candidate spells it
    out). The chosen one is scored last, so the cache holds its keys and values past the prompt
    for the next keystroke. `room`: the most tokens a candidate may take.
    """
    first = torch.log_softmax(logits, dim=-1)
    forced = req.forced_prefix
    scored: list[tuple[float, list[int], str]] = []
    for text in req.copy.candidates:
        ids = tokenizer.encode(text + "\n")
        if not text.encode("utf-8").startswith(forced) or len(ids) < 2 or len(ids) > room:
            scored.append((float("-inf"), ids, text))
            continue
        rows = torch.log_softmax(score(ids[:-1], pos), dim=-1)  # (len - 1, vocab)
        total = float(first[ids[0]]) + float(rows.gather(1, torch.tensor(ids[1:]).unsqueeze(1)).sum())
        scored.append((total / len(ids), ids, text))
    scores = tuple(s for s, _, _ in scored)
    best = max(range(len(scored)), key=lambda i: scored[i][0])
    top, ids, text = scored[best]
    if top < req.copy.min_logprob:
        return None, scores
    if best != len(scored) - 1:
        score(ids[:-1], pos)  # put the chosen candidate's keys and values back
    return (ids, text), scores
