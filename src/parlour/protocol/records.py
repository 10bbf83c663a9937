"""Records carried inside replies and events: the message record and the rows of listings.

``MessageRecord`` is a frozen dataclass (it is the heart of history, join, resume and the
message events); the rows of ``rooms``, ``who``, ``bans`` and ``audit`` and the ``hello``
limits are ``TypedDict``s: plain JSON objects whose keys mypy checks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from parlour.protocol.errors import ErrorCode, ProtocolError
from parlour.protocol.fastinit import fast_init_module

__all__ = [
    "AttachmentRow",
    "AuditRow",
    "BanRow",
    "EndpointRow",
    "Limits",
    "MessageRecord",
    "RelayRow",
    "RoomRow",
    "UnreadRow",
    "WhoRow",
    "attachment_from_wire",
    "endpoint_problem",
    "endpoints_from_wire",
    "endpoints_to_wire",
    "normalize_endpoint",
    "records_from_wire",
]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class AttachmentRow(TypedDict):
    """The file attached to a message (docs/design/files.md): the file id, its sanitised
    name, size in bytes, the content type sniffed by the server, its SHA-256 (hex), whether
    downloads are served inline and whether a thumbnail exists."""

    id: str
    name: str
    size: int
    type: str
    sha256: str
    inline: bool
    thumbnail: bool


_ATTACHMENT_KEYS = (
    ("id", str),
    ("name", str),
    ("size", int),
    ("type", str),
    ("sha256", str),
    ("inline", bool),
    ("thumbnail", bool),
)


def attachment_from_wire(value: Any) -> AttachmentRow | None:
    """A message record's ``attachment``: null or an object with the documented keys."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ProtocolError(ErrorCode.INVALID_FIELD, "attachment must be an object or null")
    out: dict[str, Any] = {}
    for key, kind in _ATTACHMENT_KEYS:
        item = value.get(key)
        ok = isinstance(item, kind) and (kind is not int or _is_int(item))
        if not ok:
            raise ProtocolError(
                ErrorCode.INVALID_FIELD, f"attachment field {key!r} is malformed", field=key
            )
        out[key] = item
    return out  # type: ignore[return-value]


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageRecord:
    """A room message (``room`` set) or a DM (``peer`` set: the other participant, seen from
    the connection that receives the record). Deleted messages are tombstones
    (``text=None, deleted=True``). ``sender`` is ``"from"`` on the wire."""

    room: str | None = None
    peer: str | None = None
    seq: int
    ts: float
    sender: str
    text: str | None
    edited: bool = False
    deleted: bool = False
    client_id: str | None = None
    attachment: AttachmentRow | None = None

    def __post_init__(self) -> None:
        if (self.room is None) == (self.peer is None):
            raise ProtocolError(
                ErrorCode.INVALID_FIELD, "a message has exactly one of 'room' or 'peer'"
            )

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"room": self.room} if self.room is not None else {"peer": self.peer}
        out["seq"] = self.seq
        out["ts"] = self.ts
        out["from"] = self.sender
        out["text"] = self.text
        out["edited"] = self.edited
        out["deleted"] = self.deleted
        out["client_id"] = self.client_id
        out["attachment"] = self.attachment
        return out

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> MessageRecord:
        if isinstance(obj, MessageRecord):
            return obj
        if not isinstance(obj, Mapping):
            raise ProtocolError(ErrorCode.INVALID_FIELD, "a message record must be an object")
        try:
            room, peer = obj.get("room"), obj.get("peer")
            seq, ts, sender, text = obj["seq"], obj["ts"], obj["from"], obj["text"]
        except KeyError as exc:
            raise ProtocolError(
                ErrorCode.MISSING_FIELD, f"message missing {exc.args[0]!r}", field=exc.args[0]
            ) from None
        if not _is_int(seq) or not isinstance(ts, int | float) or not isinstance(sender, str):
            raise ProtocolError(ErrorCode.INVALID_FIELD, "malformed message record")
        if text is not None and not isinstance(text, str):
            raise ProtocolError(ErrorCode.INVALID_FIELD, "malformed message text", field="text")
        client_id = obj.get("client_id")
        return cls(
            room=room if isinstance(room, str) else None,
            peer=peer if isinstance(peer, str) else None,
            seq=seq,
            ts=float(ts),
            sender=sender,
            text=text,
            edited=bool(obj.get("edited", False)),
            deleted=bool(obj.get("deleted", False)),
            client_id=client_id if isinstance(client_id, str) else None,
            attachment=attachment_from_wire(obj.get("attachment")),
        )


def records_from_wire(value: Any) -> list[MessageRecord]:
    """A JSON array of message records."""
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ProtocolError(ErrorCode.INVALID_FIELD, "messages must be an array")
    return [MessageRecord.from_wire(item) for item in value]


class Limits(TypedDict):
    """The server's limits, announced in the ``hello`` reply."""

    max_frame: int
    max_text: int
    rate_per_second: float
    rate_burst: float
    password_min_length: int
    max_page: int
    max_file_size: NotRequired[int]
    read_rate_per_second: NotRequired[float]
    read_burst: NotRequired[float]
    upload_url: NotRequired[str]
    web_url: NotRequired[str]
    web_port: NotRequired[int]


class RoomRow(TypedDict):
    """One room of the ``rooms`` reply."""

    name: str
    members: int
    online: int
    joined: bool


class WhoRow(TypedDict):
    """One user of the ``who`` reply."""

    username: str
    role: str
    online: bool
    login_ts: float | None
    last_active: float | None
    rooms: list[str]


class BanRow(TypedDict):
    """One active ban of the ``bans`` reply."""

    user: str
    until: float | None
    reason: str
    by: str
    ts: float


class UnreadRow(TypedDict, total=False):
    """One room (``room``) or DM conversation (``peer``) of the ``unread`` reply: its last
    sequence, your read position, how many messages after it are not yours (``unread``, at most
    1000: ``capped`` when there are more) and how many of those mention you."""

    room: str
    peer: str
    last_seq: int
    read_seq: int
    unread: int
    mentions: int
    capped: bool


class AuditRow(TypedDict):
    """One entry of the ``audit`` reply."""

    ts: float
    actor: str
    action: str
    target: str
    reason: str


class EndpointRow(TypedDict):
    """A UDP endpoint of a client (file transfers): an IP address literal and a port."""

    host: str
    port: int


class RelayRow(TypedDict, total=False):
    """Where the server's UDP relay listens (``host`` null: the host the client connected to
    for chat) and, in a transfer's grant, this side's ``ticket`` (base64)."""

    host: str | None
    port: int
    ticket: str


Endpoint = tuple[str, int]


def endpoint_problem(host: object, port: object) -> str | None:
    """What is wrong with a reported UDP endpoint (None: nothing). The host must be an IP
    address literal (never a name the peer would have to resolve), neither unspecified nor
    multicast; the port 1-65535."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        return "port must be an integer from 1 to 65535"
    if not isinstance(host, str) or len(host) > 64:
        return "host must be an IP address"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return "host must be an IP address (not a name)"
    if ip.is_unspecified or ip.is_multicast:
        return "host must not be an unspecified or multicast address"
    return None


def normalize_endpoint(host: str, port: int) -> Endpoint:
    """The endpoint in one spelling (IPv4-mapped IPv6 as IPv4, compressed IPv6); call
    :func:`endpoint_problem` first."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (str(ip), int(port))


def endpoints_from_wire(value: Any, limit: int = 8) -> tuple[Endpoint, ...]:
    """A JSON array of ``{"host": .., "port": ..}`` objects (or ``[host, port]`` pairs), at
    most ``limit`` of them, checked and normalised (duplicates dropped, order kept)."""
    if not isinstance(value, list | tuple) or len(value) > limit:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"endpoints must be a list of at most {limit}")
    out: list[Endpoint] = []
    for item in value:
        if isinstance(item, Mapping):
            host, port = item.get("host"), item.get("port")
        elif isinstance(item, list | tuple) and len(item) == 2:
            host, port = item
        else:
            raise ProtocolError(
                ErrorCode.INVALID_FIELD, 'an endpoint is an object {"host": .., "port": ..}'
            )
        problem = endpoint_problem(host, port)
        if problem is not None:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"endpoint: {problem}")
        assert isinstance(host, str) and isinstance(port, int)
        ep = normalize_endpoint(host, port)
        if ep not in out:
            out.append(ep)
    return tuple(out)


def endpoints_to_wire(endpoints: Sequence[Endpoint]) -> list[EndpointRow]:
    return [{"host": host, "port": port} for host, port in endpoints]


fast_init_module(globals())
