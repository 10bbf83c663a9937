"""Decrypted TLS data read into one shared buffer.

uvloop's TLS layer hands a plain `asyncio.Protocol` each read as a fresh `bytes` taken
from `SSLObject.read(256 KiB)`: CPython allocates the full 256 KiB and shrinks it, and
glibc serves an allocation that size with mmap, then mremap and munmap — three system
calls per read in a process whose malloc threshold has not risen (measured: one of two
forked workers did it on every other read, and `--workers 2` relayed fewer TLS requests
per second than one worker). A `BufferedProtocol` gets the data decrypted into a buffer
it provides instead; the relays then copy just the bytes read.

One buffer serves every connection of the process: a read fills it and `buffer_updated`
copies it out before anything else runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["DecryptedReads"]

_BUFFER = memoryview(bytearray(256 * 1024))


class DecryptedReads(asyncio.BufferedProtocol):
    """Mix into a relay protocol (after it in the bases, so its `data_received` is the
    one called) whose transport is TLS. The protocol must not derive from
    `asyncio.Protocol`: uvloop then ignores `get_buffer`."""

    def get_buffer(self, sizehint: int) -> memoryview:
        return _BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        receive: Any = self
        receive.data_received(bytes(_BUFFER[:nbytes]))
