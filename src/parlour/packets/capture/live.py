"""Live capture: decisions (pure) and a thin AF_PACKET adapter that writes pcap/pcapng.

The pure part — which link type an interface has, which frames to keep, when to stop — takes
its inputs (hardware type, packet type, the clock) as arguments. :class:`LiveCapture` is the
adapter: an ``AF_PACKET`` socket bound to one interface with a classic BPF port filter attached
in the kernel (see :mod:`parlour.packets.capture.bpf`), kernel timestamps (``SO_TIMESTAMPNS``), one
fixed receive buffer, and records written straight to the capture file, so the file is valid
whenever the capture stops — at the count, at the time limit, on :meth:`LiveCapture.stop` or on
Ctrl-C. Loopback frames are seen twice by a packet socket (leaving and arriving); like tcpdump,
the outgoing copy is skipped on loopback.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from parlour.packets.capture.bpf import accept_all, pack_program, port_filter
from parlour.packets.files.pcap import PcapWriter
from parlour.packets.files.pcapng import PcapngWriter
from parlour.packets.files.records import MAX_SNAPLEN
from parlour.packets.wire.linktypes import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_RAW

__all__ = [
    "ANY",
    "ARPHRD_LOOPBACK",
    "CaptureError",
    "CaptureLimits",
    "CaptureReport",
    "LiveCapture",
    "keep_frame",
    "link_for_arphrd",
    "sll_header",
]

ETH_P_ALL = 0x0003
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ARPHRD_NONE = 0xFFFE
ARPHRD_RAWIP = 519
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
SO_RCVBUFFORCE = 33
PACKET_AUXDATA = 8
#: the socket's receive buffer (tcpdump's -B): bursts wait here while frames are written
BUFFER_BYTES = 32 * 1024 * 1024
#: the pseudo-interface for capturing on every interface at once
ANY = "any"

Format = Literal["pcap", "pcapng"]


class CaptureError(OSError):
    """The capture cannot start (no permission, unknown interface) or the socket failed."""


def link_for_arphrd(hatype: int) -> tuple[int, int]:
    """``(pcap link type, network header offset)`` for an interface's ARPHRD type."""
    if hatype in (ARPHRD_ETHER, ARPHRD_LOOPBACK):
        return LINKTYPE_ETHERNET, 14
    if hatype in (ARPHRD_NONE, ARPHRD_RAWIP):
        return LINKTYPE_RAW, 0
    raise CaptureError(f"cannot capture on this interface: unsupported hardware type {hatype}")


def keep_frame(pkttype: int, loopback: bool) -> bool:
    """Whether a frame the packet socket saw belongs in the capture.

    On loopback every packet is seen leaving (``PACKET_OUTGOING``) and arriving; keep only
    the arrival, as tcpdump does, so each packet is recorded once.
    """
    return not (loopback and pkttype == PACKET_OUTGOING)


_SLL = struct.Struct("!HHH8sH")


def sll_header(pkttype: int, hatype: int, hwaddr: bytes, protocol: int) -> bytes:
    """The 16-byte Linux cooked-capture (LINKTYPE_LINUX_SLL) header for a frame from "any"."""
    return _SLL.pack(pkttype, hatype, len(hwaddr), hwaddr[:8], protocol)


@dataclass(slots=True)
class CaptureLimits:
    """When a capture stops: after *count* packets or *seconds* (either may be ``None``)."""

    count: int | None = None
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError("seconds must be positive")

    def deadline(self, started: float) -> float | None:
        return None if self.seconds is None else started + self.seconds

    def done(self, packets: int, now: float, started: float) -> bool:
        if self.count is not None and packets >= self.count:
            return True
        return self.seconds is not None and now - started >= self.seconds

    def wait(self, now: float, started: float, cap: float = 3600.0) -> float:
        """How long the adapter may block waiting for the next packet."""
        if self.seconds is None:
            return cap
        return max(0.0, min(cap, started + self.seconds - now))


@dataclass(frozen=True, slots=True)
class CaptureReport:
    interface: str
    port: int | None
    packets: int
    bytes: int
    kernel_drops: int
    seconds: float
    reason: str

    def __str__(self) -> str:
        what = f"port {self.port} on {self.interface}" if self.port else self.interface
        drops = f", {self.kernel_drops} dropped by the kernel" if self.kernel_drops else ""
        return (
            f"captured {self.packets} packets ({self.bytes} bytes) from {what} in "
            f"{self.seconds:.1f} s{drops}; stopped: {self.reason}"
        )


def _interface_type(interface: str) -> int:
    try:
        return int(Path(f"/sys/class/net/{interface}/type").read_text().strip())
    except (OSError, ValueError):
        names = ", ".join(name for _, name in socket.if_nameindex())
        raise CaptureError(f"no such interface {interface!r} (available: {names})") from None


def _set_buffer(sock: socket.socket, size: int) -> None:
    """The kernel queue in front of us: loopback delivers a 3 MB transfer in a few
    milliseconds, far faster than Python writes frames, and the default (about 200 kB) would
    drop most of it. Root may exceed ``net.core.rmem_max`` (SO_RCVBUFFORCE), as tcpdump's -B."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _attach(sock: socket.socket, program: bytes) -> None:
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class LiveCapture:
    """Record frames from one interface to a capture stream (use as a context manager).

    ``run()`` blocks until a limit is reached, :meth:`stop` is called (from any thread or a
    signal handler) or Ctrl-C; it returns a :class:`CaptureReport`. ``on_packet(ts_ns, frame)``
    is called for every recorded frame.
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        interface: str = "lo",
        port: int | None = None,
        limits: CaptureLimits | None = None,
        fmt: Format = "pcap",
        nanosecond: bool = False,
        snaplen: int = MAX_SNAPLEN,
        on_packet: Callable[[int, bytes], None] | None = None,
        buffer_bytes: int = BUFFER_BYTES,
    ) -> None:
        self.interface = interface
        self.port = port
        self.limits = limits or CaptureLimits()
        self._on_packet = on_packet
        #: "any": every interface, link headers replaced by Linux cooked (SLL) headers
        self.cooked = interface == ANY
        if self.cooked:
            self.loopback = False
            self.linktype, link_len = LINKTYPE_LINUX_SLL, 0
        else:
            hatype = _interface_type(interface)
            self.loopback = hatype == ARPHRD_LOOPBACK
            self.linktype, link_len = link_for_arphrd(hatype)
        program = port_filter(port, snaplen, link_len) if port else accept_all(snaplen)
        try:
            # one interface, protocol 0: the socket receives nothing until bind(), so no frame
            # slips past before the filter is attached. "any" cannot be bound (ifindex 0):
            # it receives from the start, and what it queued before the filter is discarded.
            self._sock = (
                socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
                if self.cooked
                else socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            )
        except PermissionError:
            raise CaptureError(
                "capturing needs root (or CAP_NET_RAW): run with sudo, or use tshark/tcpdump"
            ) from None
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            _attach(self._sock, pack_program(program))
            self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            _set_buffer(self._sock, buffer_bytes)
            # the original length of frames the snap length cuts short (as libpcap does)
            self._sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            if self.loopback:
                # older kernels lack this option: keep_frame() drops the copies instead
                with contextlib.suppress(OSError):
                    self._sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            if self.cooked:
                while True:
                    try:
                        self._sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_TRUNC)
                    except BlockingIOError:
                        break
            else:
                self._sock.bind((interface, ETH_P_ALL))
        except OSError as exc:
            self.close()
            raise CaptureError(f"cannot capture on {interface}: {exc.strerror or exc}") from exc
        self._snaplen = snaplen
        self._view = memoryview(b"")
        self._stop_reason = "stopped"
        self._writer: PcapWriter | PcapngWriter
        if fmt == "pcapng":
            self._writer = PcapngWriter(
                stream, self.linktype, nanosecond=nanosecond, if_name=interface, snaplen=snaplen
            )
        else:
            self._writer = PcapWriter(stream, self.linktype, nanosecond=nanosecond, snaplen=snaplen)
        self._stream = stream

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for s in (self._sock, self._wake_r, self._wake_w):
            s.close()

    def stop(self, reason: str = "stopped") -> None:
        """Ask :meth:`run` to write what is queued and return (safe from threads and signal
        handlers); *reason* ends up in the report."""
        self._stop_reason = reason
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def kernel_drops(self) -> int:
        try:
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return 0
        return int(struct.unpack("II", raw)[1])

    def _drain(self, budget: int | None) -> tuple[int, int]:
        """Write the frames already queued on the socket (at most *budget*)."""
        view = self._view
        anc = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(_AUXDATA.size)
        count = total = 0
        while budget is None or count < budget:
            try:
                n, ancdata, _flags, addr = self._sock.recvmsg_into([view], anc, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            if self.cooked:
                ifname, proto, pkttype, hatype, hwaddr = addr
                if not keep_frame(pkttype, ifname == "lo"):
                    continue
                frame = sll_header(pkttype, hatype, hwaddr, proto) + view[:n]
                link = len(frame) - n
            else:
                if not keep_frame(addr[2], self.loopback):
                    continue
                frame = bytes(view[:n])
                link = 0
            ts_ns, original = _ancillary(ancdata)
            # the frame's length on the wire, not what the snap length let through
            self._writer.write(ts_ns, frame, max(n, original) + link)
            if self._on_packet is not None:
                self._on_packet(ts_ns, frame)
            count += 1
            total += n
        self._stream.flush()
        return count, total

    def run(self) -> CaptureReport:
        limits = self.limits
        self._view = memoryview(bytearray(self._snaplen))
        count = total = 0
        reason = "stopped"
        started = time.monotonic()
        sel = selectors.DefaultSelector()
        sel.register(self._sock, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)

        def drain() -> None:
            nonlocal count, total
            n, size = self._drain(None if limits.count is None else limits.count - count)
            count += n
            total += size

        try:
            while True:
                now = time.monotonic()
                if limits.done(count, now, started):
                    reason = "count reached" if limits.count and count >= limits.count else "time"
                    break
                events = sel.select(limits.wait(now, started))
                if events:
                    drain()
                if any(key.fileobj is self._wake_r for key, _ in events):
                    reason = self._stop_reason  # what was already queued has been written
                    break
        except KeyboardInterrupt:
            reason = "interrupted"
            drain()
        finally:
            sel.close()
            self._stream.flush()
        return CaptureReport(
            self.interface,
            self.port,
            count,
            total,
            self.kernel_drops(),
            time.monotonic() - started,
            reason,
        )


#: struct tpacket_auxdata: status, original length, snap length, mac and network offsets, VLAN
_AUXDATA = struct.Struct("IIIHHHH")


def _ancillary(ancdata: list[tuple[int, int, bytes]]) -> tuple[int, int]:
    """The kernel's receive time (ns) and the frame's original length (0 when not given)."""
    ts_ns = 0
    original = 0
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            ts_ns = int(sec * 1_000_000_000 + nsec)
        elif level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= 8:
            original = _AUXDATA.unpack_from(data.ljust(_AUXDATA.size, b"\0"))[1]
    return ts_ns or time.time_ns(), original


def capture_to_file(
    path: str | Path,
    *,
    interface: str = "lo",
    port: int | None = None,
    limits: CaptureLimits | None = None,
    fmt: Format | None = None,
    nanosecond: bool = False,
    ready: Callable[[LiveCapture], None] | None = None,
    on_packet: Callable[[int, bytes], None] | None = None,
) -> CaptureReport:
    """Capture to *path* (pcapng if it ends in ``.pcapng`` unless *fmt* says otherwise).

    *ready* is called with the open capture once it is listening (tests use it to start
    traffic and to keep a handle for :meth:`LiveCapture.stop`); *on_packet* is called with
    ``(ts_ns, frame)`` for every recorded frame.
    """
    fmt = fmt or ("pcapng" if str(path).endswith(".pcapng") else "pcap")
    try:
        f = open(path, "wb")  # noqa: SIM115 - closed below, after the capture
    except OSError as exc:
        raise CaptureError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with LiveCapture(
            f,
            interface=interface,
            port=port,
            limits=limits,
            fmt=fmt,
            nanosecond=nanosecond,
            on_packet=on_packet,
        ) as cap:
            if ready is not None:
                ready(cap)
            return cap.run()
    except CaptureError:
        f.close()
        os.unlink(path)
        raise
    finally:
        f.close()
