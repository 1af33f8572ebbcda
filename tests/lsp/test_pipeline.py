import asyncio

from codeassist.lsp.backends import CompletionRequest, FakeBackend
from codeassist.lsp.context import Mode, build_context
from codeassist.lsp.pipeline import Pipeline
from codeassist.lsp.settings import Settings

DOC = "import os\n\ndef main():\n    \n\nmain()\n"
CUR = DOC.index("    \n") + 4


def ctx(text: str = DOC, offset: int = CUR, uri: str = "file:///a.py"):  # type: ignore[no-untyped-def]
    return build_context(uri, "python", text, offset)


async def test_completion_goes_through_backend_and_postprocessing() -> None:
    fake = FakeBackend(lambda r: "print(os.getcwd())\n    return 0\nmain()\n")
    pipe = Pipeline(fake, Settings())
    got = await pipe.complete(ctx())
    assert got.text == "print(os.getcwd())\n    return 0" and got.mode is Mode.BLOCK
    req = fake.requests[0]
    assert req.prompt.forced == "    " and "\ndef " in req.stop.strings
    assert req.stop.dedent_line_prefix == "    "  # BLOCK: a dedent ends the block while decoding
    assert len(req.prompt.ids) + req.max_tokens <= 1024


async def test_typing_through_the_suggestion_makes_no_model_call() -> None:
    fake = FakeBackend(lambda r: "print(os.getcwd())")
    pipe = Pipeline(fake, Settings())
    await pipe.complete(ctx())
    typed = DOC[:CUR] + "print(" + DOC[CUR:]
    got = await pipe.complete(ctx(typed, CUR + 6))
    assert got.text == "os.getcwd())" and got.from_cache
    assert len(fake.requests) == 1
    off = Pipeline(FakeBackend(lambda r: "print(os.getcwd())"), Settings(cache=False))
    await off.complete(ctx())
    assert not (await off.complete(ctx(typed, CUR + 6))).from_cache


async def test_newest_request_supersedes_the_older_one() -> None:
    fake = FakeBackend(lambda r: "x", steps=100, step_s=0.01)
    pipe = Pipeline(fake, Settings())
    first = asyncio.ensure_future(pipe.complete(ctx()))
    await asyncio.sleep(0.05)
    second = asyncio.ensure_future(pipe.complete(ctx(DOC[:CUR] + "p" + DOC[CUR:], CUR + 1)))
    await asyncio.sleep(0)
    assert (await second).text == "x"
    assert first.cancelled()
    assert fake.cancelled == 1 and fake.steps_run < 200


async def test_other_documents_are_not_superseded() -> None:
    fake = FakeBackend(lambda r: "x", steps=5, step_s=0.01)
    pipe = Pipeline(fake, Settings())
    a = asyncio.ensure_future(pipe.complete(ctx(uri="file:///a.py")))
    b = asyncio.ensure_future(pipe.complete(ctx(uri="file:///b.py")))
    assert [r.text for r in await asyncio.gather(a, b)] == ["x", "x"]


async def test_inside_a_word_asks_nothing() -> None:
    fake = FakeBackend()
    pipe = Pipeline(fake, Settings())
    text = "value = compu\n"
    got = await pipe.complete(ctx(text, 10))
    assert got.text == "" and got.mode is Mode.NONE and not fake.requests
    assert pipe.last_reason == "the cursor is inside a word"


async def test_not_ready_backend_says_why() -> None:
    pipe = Pipeline(FakeBackend(ready=False, reason="the model file is truncated"), Settings())
    got = await pipe.complete(ctx())
    assert got.text == "" and got.reason == "the model file is truncated"


async def test_line_mode_stops_at_newline_while_decoding() -> None:
    seen: list[CompletionRequest] = []
    fake = FakeBackend(lambda r: seen.append(r) or "1")  # type: ignore[func-returns-value]
    await Pipeline(fake, Settings()).complete(ctx("x = \n", 4))
    assert seen[0].stop.strings == ("\n",)


async def test_latency_percentiles_are_kept() -> None:
    pipe = Pipeline(FakeBackend(lambda r: "1"), Settings())
    for i in range(5):
        await pipe.complete(ctx(f"x{i} = \n", 5))
    assert pipe.latency.percentile(0.5) is not None
    assert pipe.latency.percentile(0.95) >= pipe.latency.percentile(0.5)  # type: ignore[operator]


async def test_typing_requests_get_a_shorter_time_budget_than_invoked_ones() -> None:
    from codeassist.lsp.pipeline import TYPING_TIME_BUDGET_MS

    fake = FakeBackend(lambda r: "1")
    pipe = Pipeline(fake, Settings(time_budget_ms=1500))
    await pipe.complete(ctx("x = \n", 4))
    await pipe.complete(ctx("y = \n", 4), invoked=True)
    assert [r.time_budget_s for r in fake.requests] == [TYPING_TIME_BUDGET_MS / 1000, 1.5]


async def test_inline_and_classic_requests_do_not_supersede_each_other() -> None:
    fake = FakeBackend(lambda r: "x", steps=5, step_s=0.01)
    pipe = Pipeline(fake, Settings())
    a = asyncio.ensure_future(pipe.complete(ctx()))
    b = asyncio.ensure_future(pipe.complete(ctx(), channel="classic"))
    assert [r.text for r in await asyncio.gather(a, b)] == ["x", "x"]


class _RemoteFake(FakeBackend):
    """A team server's backend as the pipeline sees it: it cannot score copy candidates."""

    def status(self):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        return replace(super().status(), backend="remote")


COPY_DOC = ("def load(path):\n    with open(path, encoding='utf-8') as handle:\n        return json.load(handle)\n\n\n"
            "def load_again(path):\n    with open(path, encoding='utf-8') as handle:\n        ")


async def _with_workspace(backend: FakeBackend, text: str, copy: bool = True) -> tuple[str, list[CompletionRequest]]:
    from codeassist.lsp.workspace import WorkspaceIndex

    uri = "file:///w.py"
    pipe = Pipeline(backend, Settings(copy=copy))
    pipe.workspace = WorkspaceIndex(lambda: {uri: ("/w.py", 1, text)})
    got = await pipe.complete(build_context(uri, "python", text, len(text)))
    return got.text, backend.requests


async def test_local_backends_get_the_copy_candidate_to_score() -> None:
    text, requests = await _with_workspace(FakeBackend(lambda r: "model()"), COPY_DOC)
    assert text == "model()" and requests[0].copy == ("        return json.load(handle)",)
    _, requests = await _with_workspace(FakeBackend(lambda r: "model()"), COPY_DOC, copy=False)
    assert requests[0].copy == ()


async def test_a_remote_backend_is_not_asked_when_a_long_match_gives_the_line() -> None:
    text, requests = await _with_workspace(_RemoteFake(lambda r: "model()"), COPY_DOC)
    assert text == "return json.load(handle)" and requests == []
    short = "x = 1\n\ny = compute(x)\n\nz = compute"  # a short match: the team server answers
    text, requests = await _with_workspace(_RemoteFake(lambda r: "(y)"), short)
    assert text == "(y)" and len(requests) == 1


async def test_reconfigure_keeps_the_backend_unless_the_settings_choose_another() -> None:
    first = FakeBackend(lambda r: "print(os.getcwd())")
    made: list[FakeBackend] = []

    def factory(settings: Settings) -> FakeBackend:
        made.append(FakeBackend(lambda r: "second()"))
        return made[-1]

    pipe = Pipeline(first, Settings())
    await pipe.complete(ctx())
    assert pipe.reconfigure(Settings(max_tokens=12), factory) is None  # same backend, new settings
    assert pipe.backend is first and pipe.settings.max_tokens == 12 and not made
    assert pipe.cache.lookup(ctx()) is not None
    assert pipe.reconfigure(Settings(model="other"), factory) is first  # the caller closes it
    assert pipe.backend is made[0] and pipe.cache.lookup(ctx()) is None
    assert (await pipe.complete(ctx())).text == "second()"
