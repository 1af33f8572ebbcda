"""Line exact match through the editor's pipeline: hits counted per line, on one open backend,
with the invoked time budget."""

from __future__ import annotations

import asyncio

from codeassist.evaluation.exact import pipeline_hits, scoring_settings
from codeassist.evaluation.lines import line_samples

from .conftest import VAL


class _EchoBackend:
    """Answers every case with the expected text, and records the time budget it was given."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.budgets: list[float | None] = []

    def status(self):  # type: ignore[no-untyped-def]
        from codeassist.lsp.backends import BackendStatus

        return BackendStatus("fake", "fake", "cpu", True, context_tokens=1024)

    async def complete(self, request):  # type: ignore[no-untyped-def]
        from codeassist.lsp.backends import BackendResult

        self.budgets.append(request.time_budget_s)
        return BackendResult(self.answers.get(request.prompt.prefix[-40:], ""), "stop")

    async def aclose(self) -> None:
        pass


def test_exact_match_asks_with_the_full_time_budget_and_counts_hits() -> None:
    samples = line_samples(VAL, 6, seed=3)
    # answer half the cases right (keyed by the prompt's end, which is the document before the cut)
    answers = {s.document[:s.offset][-40:]: s.expected for s in samples[::2]}
    backend = _EchoBackend(answers)
    hits = sum(asyncio.run(pipeline_hits(backend, scoring_settings(), samples)))
    assert hits == len(samples[::2])
    # a busy CPU must not lower the score: the typing budget (180 ms) is not applied
    assert backend.budgets == [30.0] * len(samples)


def test_line_hits_are_the_gates_hits_line_by_line_on_one_open_backend() -> None:
    class Closing(_EchoBackend):
        closed = 0

        async def aclose(self) -> None:
            self.closed += 1

    samples = line_samples(VAL, 6, seed=3)
    right = {1, 2, 5}
    backend = Closing({s.document[:s.offset][-40:]: s.expected for i, s in enumerate(samples) if i in right})
    hits = asyncio.run(pipeline_hits(backend, scoring_settings(), samples))
    assert hits == [i in right for i in range(len(samples))]
    assert backend.closed == 1  # kept open between lines, closed once at the end


def test_the_scoring_settings_are_greedy_single_line_and_uncached() -> None:
    s = scoring_settings()
    assert (s.temperature, s.multiline, s.cache, s.debounce_ms) == (0.0, "never", False, 0)


def test_pipeline_completions_are_what_the_hits_compare() -> None:
    from codeassist.evaluation.exact import pipeline_completions

    samples = line_samples(VAL, 4, seed=5)
    answers = {s.document[:s.offset][-40:]: s.expected + "  " for s in samples[:2]}  # trailing spaces
    completions = asyncio.run(pipeline_completions(_EchoBackend(answers), scoring_settings(), samples))
    assert [c.text.rstrip() for c in completions[:2]] == [s.expected.rstrip() for s in samples[:2]]
    assert asyncio.run(pipeline_hits(_EchoBackend(answers), scoring_settings(), samples)) == [True, True, False, False]
