"""The asyncio UDP adapter: one non-blocking socket per client, nothing but datagrams in and out.

Python pays per system call, so the socket is read in batches (one wake-up drains up to
``max_batch`` datagrams and hands them over as one list) and written in batches. Where the
Linux kernel offers them, UDP generic segmentation (``UDP_SEGMENT``: up to 52 datagrams of one
size to one address in a single ``sendmsg``) and receive coalescing (``UDP_GRO``: several
datagrams of one flow in one ``recvmsg``) cut the calls by an order of magnitude; each
datagram on the wire is still at most 1232 bytes. Both are probed at start and turned off
on any error, falling back to one ``sendto``/``recvfrom`` per datagram.

It uses ``loop.add_reader`` on its own socket rather than ``create_datagram_endpoint``:
asyncio's datagram transport offers neither ``sendmsg`` with ancillary data nor a batch read
(measured in docs/benchmarks/p2p.md). A send that finds the socket buffer full drops the
datagram and counts it (the transfer's congestion control treats it as loss, as a router
would); nothing queues without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["EndpointStats", "UdpEndpoint"]

Address = tuple[str, int]
Batch = list[tuple[memoryview, Address]]

_SOL_UDP = getattr(socket, "SOL_UDP", 17)
_UDP_SEGMENT = 103
_UDP_GRO = 104
_GSO_MAX_SEGMENTS = 52  # 52 x 1232 bytes stays under the 64 KiB of one IP datagram
_RECV_SIZE = 65536
_CMSG_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0


@dataclass(slots=True)
class EndpointStats:
    datagrams_in: int = 0
    datagrams_out: int = 0
    send_calls: int = 0
    recv_calls: int = 0
    send_dropped: int = 0  # socket buffer full or a send error


class UdpEndpoint:
    def __init__(
        self,
        sock: socket.socket,
        on_batch: Callable[[Batch], None],
        *,
        max_batch: int = 512,
        gso: bool = True,
        gro: bool = True,
    ) -> None:
        self._sock = sock
        self._on_batch = on_batch
        self._max_batch = max_batch
        self._loop = asyncio.get_running_loop()
        self.stats = EndpointStats()
        self._closed = False
        self._family = sock.family
        self.gso = gso and hasattr(socket, "CMSG_SPACE") and self._probe_gso()
        self.gro = gro and self._enable_gro()
        self._loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        on_batch: Callable[[Batch], None],
        *,
        buffer_bytes: int = 8 << 20,
        **kwargs: object,
    ) -> UdpEndpoint:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        sock = socket.socket(info[0], socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, buffer_bytes)
            sock.bind(info[4])
            return cls(sock, on_batch, **kwargs)  # type: ignore[arg-type]
        except BaseException:
            sock.close()
            raise

    @property
    def address(self) -> Address:
        name = self._sock.getsockname()
        return (name[0], name[1])

    def _probe_gso(self) -> bool:
        try:
            self._sock.setsockopt(_SOL_UDP, _UDP_SEGMENT, 0)
        except OSError:
            return False
        return True

    def _enable_gro(self) -> bool:
        try:
            self._sock.setsockopt(_SOL_UDP, _UDP_GRO, 1)
        except OSError:
            return False
        return True

    # ------------------------------------------------------------------ receiving

    def _readable(self) -> None:
        sock = self._sock
        batch: Batch = []
        stats = self.stats
        limit = self._max_batch
        try:
            if self.gro:
                while len(batch) < limit:
                    data, anc, _flags, addr = sock.recvmsg(_RECV_SIZE, _CMSG_SPACE)
                    stats.recv_calls += 1
                    peer = (addr[0], addr[1])
                    seg = 0
                    for level, kind, value in anc:
                        if level == _SOL_UDP and kind == _UDP_GRO:
                            seg = int.from_bytes(value, sys.byteorder)
                    view = memoryview(data)
                    if seg and seg < len(data):
                        for i in range(0, len(data), seg):
                            batch.append((view[i : i + seg], peer))
                    else:
                        batch.append((view, peer))
            else:
                while len(batch) < limit:
                    data, addr = sock.recvfrom(_RECV_SIZE)
                    stats.recv_calls += 1
                    batch.append((memoryview(data), (addr[0], addr[1])))
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:  # ICMP errors surface here (ECONNREFUSED): ignore them
            if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                raise
        if batch:
            stats.datagrams_in += len(batch)
            self._on_batch(batch)

    # ------------------------------------------------------------------ sending

    def send(self, datagrams: list[tuple[bytes, Address]]) -> None:
        """Send now; what the socket cannot take is dropped and counted."""
        if self._closed or not datagrams:
            return
        if self.gso and len(datagrams) > 1:
            self._send_gso(datagrams)
            return
        sock, stats = self._sock, self.stats
        for i, (data, addr) in enumerate(datagrams):
            try:
                sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                stats.send_dropped += len(datagrams) - i
                return
            except OSError:
                stats.send_dropped += 1
                continue
            stats.send_calls += 1
            stats.datagrams_out += 1

    def _send_gso(self, datagrams: list[tuple[bytes, Address]]) -> None:
        sock, stats = self._sock, self.stats
        i, n = 0, len(datagrams)
        while i < n:
            data, addr = datagrams[i]
            size = len(data)
            j = i + 1
            # Same destination, same size; only the last segment of a run may be shorter.
            while j < n and j - i < _GSO_MAX_SEGMENTS:
                nxt, naddr = datagrams[j]
                if naddr != addr or len(nxt) > size:
                    break
                j += 1
                if len(nxt) < size:
                    break
            try:
                if j - i == 1:
                    sock.sendto(data, addr)
                else:
                    payload = b"".join(d for d, _ in datagrams[i:j])
                    sock.sendmsg(
                        [payload], [(_SOL_UDP, _UDP_SEGMENT, struct.pack("H", size))], 0, addr
                    )
            except (BlockingIOError, InterruptedError):
                stats.send_dropped += n - i
                return
            except OSError as exc:
                if j - i > 1 and exc.errno in (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT):
                    self.gso = False  # the path or driver refuses segmentation offload
                    self.send(datagrams[i:])
                    return
                stats.send_dropped += j - i
                i = j
                continue
            stats.send_calls += 1
            stats.datagrams_out += j - i
            i = j

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
