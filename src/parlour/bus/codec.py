"""`BusMessage` <-> bytes, for a bus between processes (Redis).

A message is one JSON document (orjson)::

    {"o": origin, "n": 7,
     "f": [["AppendRoomMessage", "general", 42, "alice", "hi", 1700000000.5, "c1"], ...],
     "d": [[{"type": "event", "event": "presence", ...}, ["ToPresence", "alice"]], ...],
     "e": [["SessionsChanged", "alice", 1], ...]}

Writes, remote effects and addresses are flat frozen dataclasses of JSON values: each is its
class name followed by its fields in order; only the classes listed here are accepted (a
message is data, never code: no pickle). Events travel in their wire form and are parsed back
with `parse_event`. `decode` raises `BusDecodeError` on anything else; the receiver drops the
message and reads the truth from the store again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson

from parlour.core import outcome as o
from parlour.core import writes as w
from parlour.core.outcome import Delivery
from parlour.core.ports import BusMessage
from parlour.protocol import ProtocolError, parse_event

__all__ = ["BusDecodeError", "decode", "encode"]


class BusDecodeError(ValueError):
    """A bus message that is not one this version of Parlour writes."""


def _classes(*types: type) -> dict[str, tuple[type, tuple[str, ...]]]:
    return {t.__name__: (t, tuple(f.name for f in dataclasses.fields(t))) for t in types}


_WRITES = _classes(*w.Write.__args__)
_EFFECTS = _classes(*o.RemoteEffect.__args__)
_ADDRESSES = _classes(o.ToRoom, o.ToUsers, o.ToConns, o.ToAll, o.ToPresence)


def _flat(value: Any) -> list[Any]:
    out: list[Any] = [type(value).__name__]
    for name in value.__slots__:
        out.append(getattr(value, name))
    return out


def _build(row: Any, known: Mapping[str, tuple[type, tuple[str, ...]]]) -> Any:
    if not isinstance(row, list) or not row or not isinstance(row[0], str):
        raise BusDecodeError(f"not a record: {row!r:.80}")
    found = known.get(row[0])
    if found is None:
        raise BusDecodeError(f"unknown record {row[0]!r}")
    cls, fields = found
    values = row[1:]
    if len(values) != len(fields):
        raise BusDecodeError(f"{row[0]}: {len(values)} fields, expected {len(fields)}")
    args = [tuple(v) if isinstance(v, list) else v for v in values]
    for v in args:
        if not isinstance(v, str | int | float | bool | tuple) and v is not None:
            raise BusDecodeError(f"{row[0]}: bad field value {v!r:.80}")
    return cls(*args)


def encode(message: BusMessage) -> bytes:
    deliveries = [
        [d.event.to_wire(), _flat(d.address)]
        for d in message.deliveries
        if d.address is not None and not isinstance(d.address, o.ToConns)
    ]
    return orjson.dumps(
        {
            "o": message.origin,
            "n": message.n,
            "f": [_flat(f) for f in message.facts],
            "d": deliveries,
            "e": [_flat(e) for e in message.effects],
        }
    )


def decode(data: bytes | str) -> BusMessage:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BusDecodeError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BusDecodeError("not an object")
    origin, n = doc.get("o"), doc.get("n")
    if not isinstance(origin, str) or not isinstance(n, int):
        raise BusDecodeError("no origin")
    facts = tuple(_build(row, _WRITES) for row in _list(doc.get("f")))
    effects = tuple(_build(row, _EFFECTS) for row in _list(doc.get("e")))
    deliveries: list[Delivery] = []
    for item in _list(doc.get("d")):
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], dict):
            raise BusDecodeError("bad delivery")
        try:
            event = parse_event(item[0])
        except ProtocolError as exc:
            raise BusDecodeError(f"bad event: {exc.message}") from None
        deliveries.append(Delivery(event, (), _build(item[1], _ADDRESSES)))
    return BusMessage(origin, tuple(deliveries), facts, effects, n)


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BusDecodeError("expected a list")
    return value
