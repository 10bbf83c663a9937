"""parlour.transports.testing: the in-memory transports tests and benchmarks drive protocols
with."""

from __future__ import annotations

import asyncio

import pytest

from parlour.transports.testing import CallCountingTransport, CountingTransport, FakeTransport


def test_fake_transport_keeps_what_is_written() -> None:
    t = FakeTransport(("10.0.0.1", 4321))
    assert isinstance(t, asyncio.Transport)
    t.write(b"ab")
    t.writelines([b"c", bytearray(b"de"), memoryview(b"f")])
    assert bytes(t.out) == b"abcdef"
    assert t.get_extra_info("peername") == ("10.0.0.1", 4321)
    assert t.get_extra_info("sockname", "none") == "none"
    assert FakeTransport().get_extra_info("peername") is None
    assert t.get_write_buffer_size() == 0
    with pytest.raises(NotImplementedError):
        t.write_eof()


@pytest.mark.parametrize("kind", [FakeTransport, CountingTransport, CallCountingTransport])
def test_close_and_abort(kind: type[FakeTransport]) -> None:
    closed, aborted = kind(), kind()
    assert not closed.is_closing()
    closed.close()
    aborted.abort()
    assert closed.is_closing() and not closed.aborted
    assert aborted.is_closing() and aborted.aborted


def test_counting_transports_count_and_keep_nothing() -> None:
    bytes_only, calls = CountingTransport(), CallCountingTransport(("127.0.0.1", 1))
    for t in (bytes_only, calls):
        t.write(b"abc")
        t.writelines([b"de", b"f"])
        t.write(b"")
        assert t.written == 6 and t.out == bytearray()
    assert calls.writes == 3 and not hasattr(bytes_only, "writes")
    assert calls.get_extra_info("peername") == ("127.0.0.1", 1)
