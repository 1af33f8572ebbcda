from codeassist.lsp.cache import CompletionCache
from codeassist.lsp.context import build_context

DOC = "import os\n\ndef main():\n    \n\nmain()\n"
CUR = DOC.index("    \n") + 4


def ctx(text: str, offset: int, uri: str = "file:///a.py"):  # type: ignore[no-untyped-def]
    return build_context(uri, "python", text, offset)


def test_typing_through_a_suggestion_is_answered_from_the_cache() -> None:
    cache = CompletionCache()
    cache.store(ctx(DOC, CUR), "print(os.getcwd())")
    typed = DOC[:CUR] + "pri" + DOC[CUR:]
    assert cache.lookup(ctx(typed, CUR + 3)) == "nt(os.getcwd())"
    assert cache.lookup(ctx(DOC, CUR)) == "print(os.getcwd())"
    assert cache.hits == 2


def test_diverging_text_other_documents_and_changed_suffix_miss() -> None:
    cache = CompletionCache()
    cache.store(ctx(DOC, CUR), "print(os.getcwd())")
    assert cache.lookup(ctx(DOC[:CUR] + "pra" + DOC[CUR:], CUR + 3)) is None
    assert cache.lookup(ctx(DOC, CUR, uri="file:///b.py")) is None
    assert cache.lookup(ctx(DOC[:CUR] + DOC[CUR:].replace("main()", "other()"), CUR)) is None
    done = DOC[:CUR] + "print(os.getcwd())" + DOC[CUR:]
    assert cache.lookup(ctx(done, CUR + len("print(os.getcwd())"))) is None  # fully typed: nothing left


def test_size_is_bounded() -> None:
    cache = CompletionCache(size=3)
    for i in range(10):
        cache.store(ctx(DOC, i), f"x{i}")
    assert len(cache._entries) == 3
