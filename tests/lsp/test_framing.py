from codeassist.lsp.framing import Body, FrameParser, FramingError


def frame(body: bytes) -> bytes:
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def bodies(events: list) -> list[bytes]:
    return [e.data for e in events if isinstance(e, Body)]


def test_messages_split_across_chunks_are_reassembled() -> None:
    data = frame(b'{"a": 1}') + b"Content-Length: 3\r\nContent-Type: x\r\n\r\n[2]"
    p = FrameParser()
    out = []
    for i in range(len(data)):
        out += p.feed(data[i:i + 1])
    assert bodies(out) == [b'{"a": 1}', b"[2]"]
    assert not [e for e in out if isinstance(e, FramingError)]


def test_bad_header_resynchronises_on_the_next_message() -> None:
    p = FrameParser()
    out = p.feed(b"Garbage-Without-Length\r\n\r\n{}" + b"xyz\r\n" + frame(b'{"ok": true}'))
    assert bodies(out) == [b'{"ok": true}']
    assert any(isinstance(e, FramingError) for e in out)


def test_huge_content_length_is_refused_without_buffering() -> None:
    p = FrameParser(max_body=1024)
    out = p.feed(b"Content-Length: 1073741824\r\n\r\n" + b"x" * 5000)
    assert [e for e in out if isinstance(e, FramingError)]
    assert len(p._buf) < 64  # the refused body is not kept
    assert bodies(p.feed(frame(b"{}"))) == [b"{}"]


def test_endless_header_line_is_cut_off() -> None:
    p = FrameParser(max_header=100)
    out = p.feed(b"A" * 1000)
    assert [e for e in out if isinstance(e, FramingError)]
    assert bodies(p.feed(b"\r\n" + frame(b"[1]"))) == [b"[1]"]


def test_header_without_length_is_an_error() -> None:
    p = FrameParser()
    out = p.feed(b"Content-Type: x\r\n\r\n" + frame(b"[3]"))
    assert isinstance(out[0], FramingError)
    assert bodies(out) == [b"[3]"]
