"""In-memory stand-ins for an asyncio transport, to drive Parlour's protocols without sockets.

Hand one to a protocol's ``connection_made`` (the proxy relay's ``HttpClient`` and
``HttpUpstream``) or to the chat server's ``Endpoint.open``, then feed the protocol its input
yourself (``data_received``, ``Endpoint.received``); what it writes back stays in the
transport:

* :class:`FakeTransport` keeps every byte written, in :attr:`FakeTransport.out` (for tests
  that look at what was sent);
* :class:`CountingTransport` keeps nothing and only adds up the bytes in
  :attr:`CountingTransport.written`: one addition per write, for benchmarks that time the
  protocol and not the transport;
* :class:`CallCountingTransport` also counts the write calls in
  :attr:`CallCountingTransport.writes` (how many writes a response costs).

All three are real :class:`asyncio.Transport` subclasses (so they type-check wherever a
transport is expected). The peer address that ``get_extra_info("peername")`` reports is the
constructor's ``peer``; every other extra is absent. ``close`` and ``abort`` only mark the
transport closing (``abort`` also sets :attr:`FakeTransport.aborted`); nothing is ever
buffered (``get_write_buffer_size`` is 0) and ``pause_reading``/``resume_reading`` do nothing
(the test or benchmark decides what is read, by calling ``data_received``). Methods these
stand-ins do not need (``write_eof``, ``set_protocol``...) keep asyncio's
``NotImplementedError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["CallCountingTransport", "CountingTransport", "FakeTransport"]

Peer = tuple[str, int]
_Data = bytes | bytearray | memoryview


class FakeTransport(asyncio.Transport):
    """A transport that keeps what is written to it in :attr:`out`."""

    def __init__(self, peer: Peer | None = None) -> None:
        super().__init__()
        self.peer = peer
        """What ``get_extra_info("peername")`` answers (None: no peer address)."""
        self.out = bytearray()
        """Every byte written, in order."""
        self.closing = False
        """Set by :meth:`close` and by :meth:`abort`."""
        self.aborted = False
        """Set by :meth:`abort` only."""

    def write(self, data: _Data) -> None:
        self.out += data

    def writelines(self, list_of_data: Iterable[_Data]) -> None:
        for data in list_of_data:
            self.write(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class CountingTransport(FakeTransport):
    """A transport that keeps nothing: it only adds up the bytes written in :attr:`written`
    (``out`` stays empty). A write costs one addition, so a benchmark times the protocol."""

    def __init__(self, peer: Peer | None = None) -> None:
        super().__init__(peer)
        self.written = 0
        """How many bytes were written."""

    def write(self, data: _Data) -> None:
        self.written += len(data)

    def writelines(self, list_of_data: Iterable[_Data]) -> None:
        self.written += sum(map(len, list_of_data))


class CallCountingTransport(CountingTransport):
    """A :class:`CountingTransport` that also counts the ``write``/``writelines`` calls in
    :attr:`writes`."""

    def __init__(self, peer: Peer | None = None) -> None:
        super().__init__(peer)
        self.writes = 0
        """How many times ``write`` or ``writelines`` was called."""

    def write(self, data: _Data) -> None:
        self.written += len(data)
        self.writes += 1

    def writelines(self, list_of_data: Iterable[_Data]) -> None:
        self.written += sum(map(len, list_of_data))
        self.writes += 1
