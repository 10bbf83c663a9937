"""Write built packets to pcap/pcapng with a chosen link layer (raw IPv4 or Ethernet)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from parlour.packets.build.conversation import BuiltPacket
from parlour.packets.files.pcap import PcapWriter
from parlour.packets.files.pcapng import PcapngWriter
from parlour.packets.wire.addresses import ipv4_to_bytes
from parlour.packets.wire.linktypes import LINKTYPE_ETHERNET, LINKTYPE_RAW
from parlour.packets.wire.packet import ethernet_frame

__all__ = [
    "PCAP_MAX_SECONDS",
    "LinkOptions",
    "check_times",
    "default_mac",
    "frame_for",
    "write_capture",
    "write_capture_file",
]

Link = Literal["raw", "ethernet"]
Format = Literal["pcap", "pcapng"]


def default_mac(ip: str) -> bytes:
    """A locally administered MAC derived from the address: ``02:00:a.b.c.d``."""
    return b"\x02\x00" + ipv4_to_bytes(ip)


@dataclass(frozen=True, slots=True)
class LinkOptions:
    link: Link = "raw"
    #: MAC per host name or per IP address; missing ones use :func:`default_mac`
    macs: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def linktype(self) -> int:
        return LINKTYPE_ETHERNET if self.link == "ethernet" else LINKTYPE_RAW

    def mac(self, name: str, ip: str) -> bytes:
        return self.macs.get(name) or self.macs.get(ip) or default_mac(ip)


def frame_for(packet: BuiltPacket, link: LinkOptions) -> bytes:
    if link.link == "raw":
        return packet.datagram
    return ethernet_frame(
        link.mac(packet.dst.name, packet.dst.ip),
        link.mac(packet.src.name, packet.src.ip),
        packet.datagram,
    )


def write_capture(
    stream: BinaryIO,
    packets: Sequence[BuiltPacket],
    link: LinkOptions | None = None,
    fmt: Format = "pcap",
    *,
    nanosecond: bool = False,
    comments: bool = True,
) -> int:
    """Write *packets*; pcapng gets an interface description and a comment per message."""
    link = link or LinkOptions()
    check_times(packets, fmt)
    if fmt == "pcapng":
        ng = PcapngWriter(
            stream,
            link.linktype,
            nanosecond=nanosecond,
            comment="built by parlour packets",
            if_name="parlour-lab",
        )
        for p in packets:
            comment = None
            if comments and p.msg_id and p.payload:
                comment = (
                    f"message {p.msg_id}: {p.src.name or p.src.ip} -> {p.dst.name or p.dst.ip}"
                )
            ng.write(p.ts_ns, frame_for(p, link), comment=comment)
        return len(packets)
    writer = PcapWriter(stream, link.linktype, nanosecond=nanosecond)
    if link.link == "raw":
        return writer.write_many(packets)  # (ts_ns, datagram, ...) is what it indexes
    heads: dict[tuple[str, str, str, str], bytes] = {}

    def frames() -> Iterator[tuple[int, bytes]]:
        for p in packets:
            key = (p.src.name, p.src.ip, p.dst.name, p.dst.ip)
            head = heads.get(key)
            if head is None:
                head = heads[key] = ethernet_frame(
                    link.mac(p.dst.name, p.dst.ip), link.mac(p.src.name, p.src.ip), b""
                )
            yield p.ts_ns, head + p.datagram

    return writer.write_many(frames())


def write_capture_file(
    path: str | Path,
    packets: Sequence[BuiltPacket],
    link: LinkOptions | None = None,
    fmt: Format | None = None,
    *,
    nanosecond: bool = False,
) -> int:
    """Write to *path*; the format follows the suffix (``.pcapng`` → pcapng) unless given."""
    fmt = fmt or ("pcapng" if str(path).endswith(".pcapng") else "pcap")
    check_times(packets, fmt)
    with open(path, "wb") as f:
        return write_capture(f, packets, link, fmt, nanosecond=nanosecond)


#: a pcap record's seconds field is 32 bits: the last second it can hold (2106-02-07)
PCAP_MAX_SECONDS = (1 << 32) - 1


def check_times(packets: Sequence[BuiltPacket], fmt: Format) -> None:
    """``ValueError`` when a packet's time does not fit the format (checked before any byte
    is written, so no half-written file is left behind)."""
    if fmt == "pcap" and packets and max(p.ts_ns for p in packets) // 10**9 > PCAP_MAX_SECONDS:
        raise ValueError(
            "a pcap file holds times up to 2106-02-07 (32-bit seconds): these packets are "
            "later; write a .pcapng file (or --format pcapng)"
        )
