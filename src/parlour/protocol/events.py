"""Events of the chat protocol: one frozen dataclass per event name (as h11's ``_events``).

A server push is ``{"type": "event", "event": <name>, ...fields}`` (docs/protocol.md). The
server builds these classes and a wire encodes them (``to_wire()``); a client turns a received
frame back into the same class with :func:`parse_event`, so both sides are checked by mypy
rather than by dictionary keys. Attribute names are the wire keys, except ``sender``, which is
``"from"`` on the wire. For scripts and tests an event also reads like the mapping of its
fields (``event["text"]``, ``event.get("room")``, ``event.fields``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from parlour.protocol.errors import ErrorCode, ProtocolError
from parlour.protocol.fastinit import fast_init_module
from parlour.protocol.records import AttachmentRow, EndpointRow, MessageRecord, RelayRow
from parlour.protocol.replies import Reply, parse_reply

__all__ = [
    "EVENT_FIELDS",
    "EVENT_TYPES",
    "BannedEvent",
    "BroadcastEvent",
    "DisconnectEvent",
    "DmDeletedEvent",
    "DmEditedEvent",
    "DmEvent",
    "Event",
    "EventName",
    "FileAcceptedEvent",
    "FileEndedEvent",
    "FileOfferEvent",
    "JoinedEvent",
    "KickedEvent",
    "LeftEvent",
    "MessageDeletedEvent",
    "MessageEditedEvent",
    "MessageEvent",
    "PresenceEvent",
    "ReadMarkerEvent",
    "RoomCreatedEvent",
    "RoomDeletedEvent",
    "RoomRenamedEvent",
    "ServerFrame",
    "event_from_fields",
    "parse_event",
    "parse_server_frame",
]


class EventName(StrEnum):
    MESSAGE = "message"
    MESSAGE_EDITED = "message_edited"
    MESSAGE_DELETED = "message_deleted"
    DM = "dm"
    DM_EDITED = "dm_edited"
    DM_DELETED = "dm_deleted"
    JOINED = "joined"
    LEFT = "left"
    PRESENCE = "presence"
    BROADCAST = "broadcast"
    KICKED = "kicked"
    BANNED = "banned"
    ROOM_CREATED = "room_created"
    ROOM_RENAMED = "room_renamed"
    ROOM_DELETED = "room_deleted"
    READ_MARKER = "read_marker"
    FILE_OFFER = "file_offer"
    FILE_ACCEPTED = "file_accepted"
    FILE_ENDED = "file_ended"
    DISCONNECT = "disconnect"


def _wire_key(name: str) -> str:
    return "from" if name == "sender" else name


class Event:
    """Base of every event class. ``NAME`` is the event's name on the wire."""

    __slots__ = ()
    NAME: ClassVar[EventName]

    @property
    def name(self) -> EventName:
        return self.NAME

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "event", "event": self.NAME._value_}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[_wire_key(f.name)] = getattr(self, f.name)
        return out

    @classmethod
    def wire_fields(cls) -> frozenset[str]:
        """The keys every frame of this event carries (besides ``type`` and ``event``)."""
        return frozenset(_wire_key(f.name) for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> Event:
        """The event from its wire fields (``missing_field`` when one is absent; unknown
        fields are ignored, for forward compatibility)."""
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            key = _wire_key(f.name)
            if key not in fields:
                raise ProtocolError(
                    ErrorCode.MISSING_FIELD,
                    f"event {cls.NAME._value_!r} missing field {key!r}",
                    field=key,
                )
            kwargs[f.name] = fields[key]
        return cls(**kwargs)

    # the fields as a read-only mapping (scripts and tests)
    @property
    def fields(self) -> dict[str, Any]:
        wire = self.to_wire()
        del wire["type"], wire["event"]
        return wire

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


@dataclass(frozen=True, slots=True, kw_only=True)
class _RoomRecordEvent(Event):
    """A message record of a room (``message``, ``message_edited``, ``message_deleted``)."""

    room: str
    seq: int
    ts: float
    sender: str
    text: str | None
    edited: bool = False
    deleted: bool = False
    client_id: str | None = None
    attachment: AttachmentRow | None = None

    def to_wire(self) -> dict[str, Any]:  # hot path: every room message fanned out
        return {
            "type": "event",
            "event": self.NAME._value_,
            "room": self.room,
            "seq": self.seq,
            "ts": self.ts,
            "from": self.sender,
            "text": self.text,
            "edited": self.edited,
            "deleted": self.deleted,
            "client_id": self.client_id,
            "attachment": self.attachment,
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> Event:
        if "room" not in fields:
            raise ProtocolError(ErrorCode.MISSING_FIELD, "message event missing 'room'")
        rec = MessageRecord.from_wire(fields)
        return cls.of(rec)

    @classmethod
    def of(cls, rec: MessageRecord) -> _RoomRecordEvent:
        assert rec.room is not None
        return cls(
            room=rec.room,
            seq=rec.seq,
            ts=rec.ts,
            sender=rec.sender,
            text=rec.text,
            edited=rec.edited,
            deleted=rec.deleted,
            client_id=rec.client_id,
            attachment=rec.attachment,
        )

    @property
    def record(self) -> MessageRecord:
        return MessageRecord(
            room=self.room,
            seq=self.seq,
            ts=self.ts,
            sender=self.sender,
            text=self.text,
            edited=self.edited,
            deleted=self.deleted,
            client_id=self.client_id,
            attachment=self.attachment,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageEvent(_RoomRecordEvent):
    """A new message in a room you are a member of."""

    NAME: ClassVar[EventName] = EventName.MESSAGE


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageEditedEvent(_RoomRecordEvent):
    NAME: ClassVar[EventName] = EventName.MESSAGE_EDITED


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageDeletedEvent(_RoomRecordEvent):
    """A room message became a tombstone (``text`` None, ``deleted`` true)."""

    NAME: ClassVar[EventName] = EventName.MESSAGE_DELETED


@dataclass(frozen=True, slots=True, kw_only=True)
class _DmRecordEvent(Event):
    """A direct message record; ``peer`` is the other participant as the receiver sees it."""

    peer: str
    seq: int
    ts: float
    sender: str
    text: str | None
    edited: bool = False
    deleted: bool = False
    client_id: str | None = None
    attachment: AttachmentRow | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "event",
            "event": self.NAME._value_,
            "peer": self.peer,
            "seq": self.seq,
            "ts": self.ts,
            "from": self.sender,
            "text": self.text,
            "edited": self.edited,
            "deleted": self.deleted,
            "client_id": self.client_id,
            "attachment": self.attachment,
        }

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any]) -> Event:
        if "peer" not in fields:
            raise ProtocolError(ErrorCode.MISSING_FIELD, "dm event missing 'peer'")
        rec = MessageRecord.from_wire(fields)
        assert rec.peer is not None
        return cls(
            peer=rec.peer,
            seq=rec.seq,
            ts=rec.ts,
            sender=rec.sender,
            text=rec.text,
            edited=rec.edited,
            deleted=rec.deleted,
            client_id=rec.client_id,
            attachment=rec.attachment,
        )

    @property
    def record(self) -> MessageRecord:
        return MessageRecord(
            peer=self.peer,
            seq=self.seq,
            ts=self.ts,
            sender=self.sender,
            text=self.text,
            edited=self.edited,
            deleted=self.deleted,
            client_id=self.client_id,
            attachment=self.attachment,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DmEvent(_DmRecordEvent):
    """A direct message (yours, echoed to your other sessions, or to you)."""

    NAME: ClassVar[EventName] = EventName.DM


@dataclass(frozen=True, slots=True, kw_only=True)
class DmEditedEvent(_DmRecordEvent):
    NAME: ClassVar[EventName] = EventName.DM_EDITED


@dataclass(frozen=True, slots=True, kw_only=True)
class DmDeletedEvent(_DmRecordEvent):
    NAME: ClassVar[EventName] = EventName.DM_DELETED


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinedEvent(Event):
    """``user`` joined ``room`` (sent to the room's other members)."""

    NAME: ClassVar[EventName] = EventName.JOINED
    room: str
    user: str
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LeftEvent(Event):
    """``user`` left (or was removed from) ``room``."""

    NAME: ClassVar[EventName] = EventName.LEFT
    room: str
    user: str
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceEvent(Event):
    """A co-member came online (first session) or went offline (last session ended)."""

    NAME: ClassVar[EventName] = EventName.PRESENCE
    user: str
    online: bool
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastEvent(Event):
    """An announcement to every user; `seq` numbers broadcasts (offline users get the ones
    they missed at their next login; a client resumes them with `resume.broadcasts`)."""

    NAME: ClassVar[EventName] = EventName.BROADCAST
    sender: str
    text: str
    ts: float
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class KickedEvent(Event):
    """You were removed from ``room`` (or, ``room`` None, from the server)."""

    NAME: ClassVar[EventName] = EventName.KICKED
    room: str | None
    by: str
    reason: str
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BannedEvent(Event):
    """You were banned until ``until`` (None: permanently); the connection closes."""

    NAME: ClassVar[EventName] = EventName.BANNED
    by: str
    reason: str
    until: float | None
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomCreatedEvent(Event):
    NAME: ClassVar[EventName] = EventName.ROOM_CREATED
    room: str
    by: str
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomRenamedEvent(Event):
    NAME: ClassVar[EventName] = EventName.ROOM_RENAMED
    room: str
    new_name: str
    by: str
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RoomDeletedEvent(Event):
    NAME: ClassVar[EventName] = EventName.ROOM_DELETED
    room: str
    by: str
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadMarkerEvent(Event):
    """Your read position moved (on another of your sessions): ``room`` or ``peer``, one of
    them null."""

    NAME: ClassVar[EventName] = EventName.READ_MARKER
    room: str | None
    peer: str | None
    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FileOfferEvent(Event):
    """User ``from`` offers you a file: accept with ``file_accept {"offer"}`` before
    ``expires`` (or decline). Also sent to a session that logs in while the offer is open."""

    NAME: ClassVar[EventName] = EventName.FILE_OFFER
    offer: str
    sender: str
    filename: str
    size: int
    sha256: str
    expires: float
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FileAcceptedEvent(Event):
    """To the session that made the offer: ``by`` accepted it; send with this attempt's
    transfer id, key, the receiver's endpoints and the relay with your ticket."""

    NAME: ClassVar[EventName] = EventName.FILE_ACCEPTED
    offer: str
    by: str
    transfer: str
    key: str
    peers: list[EndpointRow]
    relay: RelayRow | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FileEndedEvent(Event):
    """An offer is over: ``declined``, ``cancelled``, ``expired``, ``done`` (verified) or
    ``offline`` (the offering session ended); ``by`` is who ended it (null for expiry)."""

    NAME: ClassVar[EventName] = EventName.FILE_ENDED
    offer: str
    reason: str
    by: str | None
    ts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DisconnectEvent(Event):
    """The server is closing this connection, and why (an error code and a text)."""

    NAME: ClassVar[EventName] = EventName.DISCONNECT
    code: str
    reason: str


_EVENT_CLASSES: tuple[type[Event], ...] = (
    MessageEvent,
    MessageEditedEvent,
    MessageDeletedEvent,
    DmEvent,
    DmEditedEvent,
    DmDeletedEvent,
    JoinedEvent,
    LeftEvent,
    PresenceEvent,
    BroadcastEvent,
    KickedEvent,
    BannedEvent,
    RoomCreatedEvent,
    RoomRenamedEvent,
    RoomDeletedEvent,
    ReadMarkerEvent,
    FileOfferEvent,
    FileAcceptedEvent,
    FileEndedEvent,
    DisconnectEvent,
)

#: event name -> its class
EVENT_TYPES: Mapping[EventName, type[Event]] = {cls.NAME: cls for cls in _EVENT_CLASSES}

#: event name -> fields always present on the wire (besides ``type`` and ``event``)
EVENT_FIELDS: Mapping[EventName, frozenset[str]] = {
    name: cls.wire_fields() for name, cls in EVENT_TYPES.items()
}


def event_from_fields(name: str, fields: Mapping[str, Any]) -> Event:
    """The event ``name`` with wire ``fields`` (``invalid_field`` for an unknown name)."""
    try:
        cls = EVENT_TYPES[EventName(name)]
    except ValueError:
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, f"unknown event {name!r}", field="event"
        ) from None
    return cls.from_fields(fields)


def parse_event(obj: Mapping[str, Any]) -> Event:
    """Parse an event frame (client side) into its class; checks the required fields."""
    if obj.get("type") != "event":
        raise ProtocolError(ErrorCode.BAD_FRAME, "not an event frame")
    name = obj.get("event")
    if not isinstance(name, str):
        raise ProtocolError(ErrorCode.MISSING_FIELD, "missing field 'event'", field="event")
    return event_from_fields(name, obj)


ServerFrame = Reply | Event


def parse_server_frame(obj: Mapping[str, Any]) -> ServerFrame:
    """Parse anything a server sends: a reply or an event."""
    if obj.get("type") == "event":
        return parse_event(obj)
    return parse_reply(obj)


fast_init_module(globals())
