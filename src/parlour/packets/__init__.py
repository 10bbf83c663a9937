"""Packet lab: build TCP/IP conversations from messages, write and read captures, capture live.

The most used names are importable from here::

    from parlour.packets import AppMessage, Endpoint, build_conversations, write_capture_file

(see docs/packets.md for the whole API).
"""

from parlour.packets.build.conversation import (
    AppMessage,
    BuildOptions,
    BuiltPacket,
    Endpoint,
    build_conversations,
)
from parlour.packets.build.messages import load_messages
from parlour.packets.build.writers import LinkOptions, write_capture, write_capture_file
from parlour.packets.files.reader import read_capture
from parlour.packets.files.records import CaptureFormatError, Record

__all__ = [
    "AppMessage",
    "BuildOptions",
    "BuiltPacket",
    "CaptureFormatError",
    "Endpoint",
    "LinkOptions",
    "Record",
    "build_conversations",
    "load_messages",
    "read_capture",
    "write_capture",
    "write_capture_file",
]
