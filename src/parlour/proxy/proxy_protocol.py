"""PROXY protocol v1 (text) and v2 (binary) headers sent to backends in TCP mode, so the
backend learns the real client address (HAProxy's spec, proxy-protocol.txt)."""

from __future__ import annotations

import ipaddress
import struct
from typing import Literal

__all__ = ["V2_SIGNATURE", "proxy_header"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_header(
    version: Literal["v1", "v2"],
    src: tuple[str, int],
    dst: tuple[str, int],
) -> bytes:
    s_ip = ipaddress.ip_address(src[0])
    d_ip = ipaddress.ip_address(dst[0])
    if s_ip.version != d_ip.version:
        # mixed families (v4-mapped etc.): send "UNKNOWN"/LOCAL rather than lie
        if version == "v1":
            return b"PROXY UNKNOWN\r\n"
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    if version == "v1":
        fam = "TCP4" if s_ip.version == 4 else "TCP6"
        return f"PROXY {fam} {s_ip} {d_ip} {src[1]} {dst[1]}\r\n".encode("ascii")
    if s_ip.version == 4:
        addr = s_ip.packed + d_ip.packed + struct.pack("!HH", src[1], dst[1])
        fam_byte = 0x11  # AF_INET, STREAM
    else:
        addr = s_ip.packed + d_ip.packed + struct.pack("!HH", src[1], dst[1])
        fam_byte = 0x21  # AF_INET6, STREAM
    return V2_SIGNATURE + bytes([0x21, fam_byte]) + struct.pack("!H", len(addr)) + addr
