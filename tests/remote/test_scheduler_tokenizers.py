"""The team server's batcher with a Hugging Face tokenizer: prompts, healing, masking and text in
the model's own ids (tiny tokenizer trained in the test, tiny random GPT of its vocabulary)."""

from __future__ import annotations

import time

import pytest

from codeassist.model.engine import GenerationRequest, StopRules
from codeassist.model.hf_tokenizer import HFTokenizer
from codeassist.model.sampling import SamplingParams
from codeassist.remote.generation import Ask, plan_jobs
from codeassist.remote.metrics import ServerMetrics
from codeassist.remote.scheduler import Scheduler
from tests.model.test_tokenization import build_folder, tiny_engine
from tests.remote.test_scheduler import drain

ASKS = [("def main():\n    retu", "\n\nmain()\n"), ("import js", ""), ("x = decoder.", "\nprint(x)\n")]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> HFTokenizer:
    return HFTokenizer.from_folder(build_folder(tmp_path_factory.mktemp("qwen"), "qwen"))


async def test_batched_sequences_equal_the_engine_in_the_models_tokenizer(qwen: HFTokenizer) -> None:
    engine = tiny_engine(qwen)
    s = Scheduler(ServerMetrics(), max_batch=3, max_queue=8, max_prefill_tokens=512)
    s.start(engine.model, engine.device, engine.dtype, tokenizer=qwen, context=engine.context_tokens)
    assert s.tokenizer is qwen and s.block_size == 128
    asks = [Ask(prefix=p, suffix=x, max_tokens=10, sampling=SamplingParams()) for p, x in ASKS]
    jobs = [plan_jobs(a, s.block_size, 64, time.monotonic() + 60, qwen)[0] for a in asks]
    assert all(j.forced_prefix for j in jobs) and all(max(j.prompt) < qwen.n_vocab for j in jobs)
    assert jobs[0].prompt[0] == qwen.special_id("<|fim_prefix|>")  # Qwen's PSM template, not our SPM
    try:
        handles = [s.submit([j]) for j in jobs]
        results = [await drain(h) for h in handles]
    finally:
        s.stop()
    for job, (texts, fins) in zip(jobs, results, strict=True):
        engine.reset_prefix()
        alone = engine.generate(GenerationRequest(prompt=job.prompt, forced_prefix=job.forced_prefix,
                                                  stop=StopRules(max_new_tokens=10)))
        forced = job.forced_prefix.decode()
        assert alone.text.startswith(forced)
        assert texts[0] == alone.text[len(forced):]
        assert fins[0].reason == alone.stop_reason


def test_special_ids_that_are_no_stop_are_never_chosen(qwen: HFTokenizer) -> None:
    import torch

    from codeassist.model.chooser import mask_banned

    size = (qwen.n_vocab + 63) // 64 * 64  # the scheduler masks every row of a step with this

    def banned(stop_on_eos: bool) -> set[int]:
        row = mask_banned(torch.zeros(size), qwen, stop_on_eos)
        return set(torch.nonzero(row == float("-inf")).flatten().tolist())

    ban = banned(True)
    assert qwen.special_id("<|im_start|>") in ban and qwen.special_id("<|fim_middle|>") in ban
    assert not ban & qwen.stop_ids and set(range(qwen.n_vocab, size)) <= ban
    assert qwen.stop_ids <= banned(False)
