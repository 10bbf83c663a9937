"""A minimal raw WebSocket client for tests: the exact bytes of the opening handshake and of
masked client frames, and a frame reader. No library between the test and the socket, so a
test can send what a browser never would (invalid UTF-8 in a text frame, oversize frames) and
see exactly what the server sends (close frames, pings)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "HandshakeError",
    "client_frame",
    "handshake",
    "read_frame",
]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class HandshakeError(ConnectionError):
    """The server did not switch protocols (its status line and headers are the message)."""


def client_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One masked client frame."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size < 65536:
        header = struct.pack(">BBH", first, 0x80 | 126, size)
    else:
        header = struct.pack(">BBQ", first, 0x80 | 127, size)
    mask = os.urandom(4)
    n = int.from_bytes(mask, "big")
    words = len(payload) // 4
    body = bytearray(payload)
    if words:
        fmt = f">{words}I"
        masked = [w ^ n for w in struct.unpack_from(fmt, body)]
        struct.pack_into(fmt, body, 0, *masked)
    for i in range(words * 4, len(body)):
        body[i] ^= mask[i % 4]
    return header + mask + bytes(body)


async def handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    path: str = "/ws",
    origin: str | None = None,
) -> dict[str, str]:
    """The opening handshake; returns the response headers (lower-case names)."""
    key = base64.b64encode(os.urandom(16))
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key.decode()}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status, *rest = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in rest:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if " 101 " not in status + " ":
        raise HandshakeError(status)
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode()
    if headers.get("sec-websocket-accept") != accept:
        raise HandshakeError(f"bad Sec-WebSocket-Accept in {headers}")
    return headers


async def read_frame(reader: asyncio.StreamReader) -> tuple[bool, int, bytes]:
    """(fin, opcode, payload) of the next frame; server frames must not be masked."""
    b0, b1 = await reader.readexactly(2)
    if b1 & 0x80:
        raise AssertionError("a server frame was masked")
    size = b1 & 0x7F
    if size == 126:
        (size,) = struct.unpack(">H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack(">Q", await reader.readexactly(8))
    payload = await reader.readexactly(size) if size else b""
    return bool(b0 & 0x80), b0 & 0x0F, payload
