"""Parlour's own chat protocol (NDJSON over TCP) as a dissector in the packet list.

tshark has no dissector for it, so this one does what a Wireshark plugin for Parlour would: a
PDU is one line; a segment that ends inside a line asks TCP to reassemble (and shows ``[TCP
segment of a reassembled PDU]``, as tshark does for HTTP), and the segment that completes
lines shows them decoded (``login alice | ok #2 ...``), secrets left out. A conversation is
chat when its first data is a JSON object line with a ``type`` or ``event`` member (on
Parlour's port 7878, when any of its data is: the capture may have started mid-way). Other
data on port 7878 stays plain TCP, as tshark shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from parlour.packets.analyze.appdecode import (
    MAX_LINES_SHOWN,
    chat_object,
    describe_chat_object,
    redact,
)
from parlour.packets.analyze.columns import Columns, Tvb
from parlour.packets.analyze.reassembly import DESEGMENT_ONE_MORE_SEGMENT

__all__ = [
    "CHAT_PORTS",
    "MAX_LINE_BYTES",
    "ChatConversation",
    "ChatLine",
    "dissect_chat",
    "looks_like_chat",
]

#: Parlour's default TCP port
CHAT_PORTS = frozenset({7878})
#: a line longer than this is not waited for (the server's own limit is far lower)
MAX_LINE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ChatLine:
    """One decoded chat line: who sent it (client or server), its object (secrets
    replaced), and the full readable text."""

    from_client: bool
    obj: dict[str, Any] | None
    text: str


@dataclass(slots=True)
class ChatConversation:
    """Per-conversation state: the user logged in on it (for DMs it receives)."""

    user: str = ""
    #: (request id, user name) of a login or signup waiting for its reply
    pending_login: tuple[Any, str] | None = None
    lines: list[ChatLine] = field(default_factory=list)


def looks_like_chat(data: bytes) -> bool:
    """The heuristic: a JSON object line with a ``type`` or ``event`` member, or the start of
    one (tried on the first data of a conversation only, so JSON carried by other protocols —
    an HTTP body — never turns a conversation into chat)."""
    head = data.lstrip()
    if not head.startswith(b'{"'):
        return False
    end = head.find(b"\n")
    if end < 0:  # a first line longer than the segment
        return b'"type":' in head[:4096] or b'"event":' in head[:4096]
    return chat_object(head[:end]) is not None


def dissect_chat(
    conv: ChatConversation, cols: Columns, tvb: Tvb, from_client: bool, can_desegment: bool
) -> tuple[int, int]:
    """Dissect the complete lines of *tvb*; ask for more when it ends inside a line."""
    data = tvb.data
    end = data.rfind(b"\n")
    if end < 0:
        if can_desegment and len(data) <= MAX_LINE_BYTES and tvb.captured == tvb.reported:
            return 0, DESEGMENT_ONE_MORE_SEGMENT
        cols.set_protocol("Parlour")
        cols.add(
            f"…line longer than {MAX_LINE_BYTES} bytes" if len(data) > MAX_LINE_BYTES
            else "…partial line"
        )  # fmt: skip
        return 0, 0
    texts: list[str] = []
    more = 0
    for raw in data[: end + 1].split(b"\n"):
        raw = raw.strip()
        if not raw:
            continue
        obj = chat_object(raw)
        if obj is None:
            text = "…not a chat line"
            safe = None
        else:
            safe = redact(obj)
            text = describe_chat_object(safe, full=True, me=conv.user)
            _track_login(conv, obj, from_client)
        conv.lines.append(ChatLine(from_client, safe, text))
        if len(texts) < MAX_LINES_SHOWN:
            texts.append(describe_chat_object(safe, me=conv.user) if safe else text)
        else:
            more += 1
    if more:
        texts.append(f"… +{more} more line{'s' if more > 1 else ''}")
    cols.set_protocol("Parlour")
    cols.add(" | ".join(texts))
    rest = len(data) - (end + 1)
    if rest and can_desegment and tvb.captured == tvb.reported:
        return end + 1, DESEGMENT_ONE_MORE_SEGMENT
    return 0, 0


def _track_login(conv: ChatConversation, obj: dict[str, Any], from_client: bool) -> None:
    """Remember who logs in: the request names the user, a successful reply confirms."""
    kind = obj.get("type")
    if from_client and kind in ("login", "signup", "register"):
        conv.pending_login = (obj.get("id"), str(obj.get("username", obj.get("user", ""))))
    elif not from_client and conv.pending_login and kind in ("ok", "error"):
        rid, name = conv.pending_login
        if obj.get("id") == rid:
            conv.pending_login = None
            conv.user = name if kind == "ok" else conv.user
