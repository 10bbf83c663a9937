"""Hex dump like Wireshark's bytes pane: offset, 16 hex bytes in two groups of 8, ASCII."""

from __future__ import annotations

from parlour.packets.wire.checksum import BytesLike

__all__ = ["hexdump"]

_PRINTABLE = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in range(256))


def hexdump(data: BytesLike, width: int = 16) -> str:
    """``0000  45 00 00 3c ...  E..<`` lines, one per *width* bytes."""
    raw = bytes(data)
    lines = []
    half = width // 2
    for off in range(0, len(raw), width):
        chunk = raw[off : off + width]
        left = " ".join(f"{b:02x}" for b in chunk[:half])
        right = " ".join(f"{b:02x}" for b in chunk[half:])
        hex_part = f"{left:<{half * 3 - 1}}  {right:<{half * 3 - 1}}"
        text = "".join(_PRINTABLE[b] for b in chunk)
        lines.append(f"{off:04x}  {hex_part}   {text}")
    return "\n".join(lines)
