"""``--filter`` for ``parlour packets analyze``: a small, documented expression language.

An expression is one or more terms separated by spaces; every term must match (AND). A term
is ``KEY=VALUE[,VALUE...]`` (any of the values matches: OR) or ``KEY!=VALUE[,VALUE...]``
(none of them matches). Keys:

* ``host``, ``src``, ``dst`` — IPv4 or IPv6 address (``host`` matches either end)
* ``port``, ``sport``, ``dport`` — TCP/UDP port (``port`` matches either end)
* ``stream`` — TCP conversation number (as tshark's ``tcp.stream``)
* ``proto`` — protocol column: ``tcp``, ``udp``, ``parlour``, ``http``, ...
* ``flag`` — a TCP analysis flag: ``retransmission``, ``fast-retransmission``,
  ``spurious-retransmission``, ``out-of-order``, ``lost-segment``, ``ack-lost-segment``,
  ``dup-ack``, ``zero-window``, ``zero-window-probe``, ``zero-window-probe-ack``,
  ``window-full``, ``window-update``, ``keep-alive``, ``keep-alive-ack``, ``rst``,
  ``ports-reused``, ``bad-checksum``, or ``any`` for any of them
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from parlour.packets.analyze.dissect import PacketAnalysis
from parlour.packets.analyze.tcp_analysis import (
    ACK_LOST_SEGMENT,
    BAD_CHECKSUM,
    DUPLICATE_ACK,
    FLAG_ORDER,
    LOST_SEGMENT,
    PORTS_REUSED,
    RESET,
    TSHARK_FIELDS,
)

__all__ = ["FILTER_KEYS", "FilterError", "PacketFilter", "flag_names", "parse_filters"]

FILTER_KEYS = ("host", "src", "dst", "port", "sport", "dport", "stream", "proto", "flag")


class FilterError(ValueError):
    """A filter expression that cannot be understood."""


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _flag_aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for flag in (*FLAG_ORDER, BAD_CHECKSUM):
        aliases[_norm(flag)] = flag
        field = TSHARK_FIELDS.get(flag)
        if field:
            aliases[_norm(field.rsplit(".", 1)[1])] = flag
    aliases.update(
        {
            "dupack": DUPLICATE_ACK,
            "lostsegment": LOST_SEGMENT,
            "acklostsegment": ACK_LOST_SEGMENT,
            "ackedunseen": ACK_LOST_SEGMENT,
            "reset": RESET,
            "portsreused": PORTS_REUSED,
            "checksum": BAD_CHECKSUM,
            "badchecksum": BAD_CHECKSUM,
        }
    )
    return aliases


_FLAGS = _flag_aliases()


def flag_names() -> list[str]:
    """The documented spellings of the flag values."""
    return [
        "retransmission", "fast-retransmission", "spurious-retransmission", "out-of-order",
        "lost-segment", "ack-lost-segment", "dup-ack", "zero-window", "zero-window-probe",
        "zero-window-probe-ack", "window-full", "window-update", "keep-alive", "keep-alive-ack",
        "rst", "ports-reused", "bad-checksum", "any",
    ]  # fmt: skip


Test = Callable[[PacketAnalysis], bool]


def _ports(pa: PacketAnalysis) -> tuple[int, int] | None:
    if pa.tcp is not None:
        return pa.tcp.sport, pa.tcp.dport
    return pa.packet.udp_ports


def _value_test(key: str, raw: str) -> Test:
    value = raw.strip()
    if not value:
        raise FilterError(f"filter {key}= needs a value")
    if key in ("host", "src", "dst"):
        try:
            value = str(ipaddress.ip_address(value))
        except ValueError:
            raise FilterError(f"{key}={value}: not an IP address") from None
        if key == "src":
            return lambda pa: pa.packet.src == value
        if key == "dst":
            return lambda pa: pa.packet.dst == value
        return lambda pa: value in (pa.packet.src, pa.packet.dst)
    if key in ("port", "sport", "dport", "stream"):
        if not value.isdigit() or (key != "stream" and int(value) > 65535):
            what = "a conversation number" if key == "stream" else "a port (0-65535)"
            raise FilterError(f"{key}={value}: expected {what}")
        n = int(value)
        if key == "stream":
            return lambda pa: pa.tcp is not None and pa.tcp.stream == n
        index = {"sport": (0,), "dport": (1,), "port": (0, 1)}[key]

        def port_test(pa: PacketAnalysis) -> bool:
            ports = _ports(pa)
            return ports is not None and any(ports[i] == n for i in index)

        return port_test
    if key == "proto":
        wanted = value.lower()
        return lambda pa: pa.protocol.lower() == wanted
    # flag
    if _norm(value) == "any":
        return lambda pa: bool(pa.flags)
    flag = _FLAGS.get(_norm(value))
    if flag is None:
        raise FilterError(f"flag={value}: unknown flag (expected one of {', '.join(flag_names())})")
    return lambda pa: flag in pa.flags


@dataclass(frozen=True, slots=True)
class PacketFilter:
    """All terms must match; ``str()`` gives back the normalised expression."""

    terms: tuple[tuple[str, bool, tuple[str, ...], tuple[Test, ...]], ...] = ()

    def __call__(self, pa: PacketAnalysis) -> bool:
        for _key, negate, _values, tests in self.terms:
            hit = any(t(pa) for t in tests)
            if hit == negate:
                return False
        return True

    def __bool__(self) -> bool:
        return bool(self.terms)

    def __str__(self) -> str:
        return " ".join(
            f"{key}{'!=' if neg else '='}{','.join(values)}" for key, neg, values, _t in self.terms
        )


_TERM = re.compile(r"^([A-Za-z]+)\s*(!=|==|=)\s*(.*)$")


def parse_filters(expressions: Iterable[str]) -> PacketFilter:
    """Parse ``--filter`` values; :class:`FilterError` with a clear message on bad input."""
    terms = []
    for expr in expressions:
        expr = re.sub(r"\s*(!=|==|=)\s*", r"\1", expr.strip())
        expr = re.sub(r"\s*,\s*", ",", expr)
        for word in expr.split():
            if word.lower() == "and":
                continue
            m = _TERM.match(word)
            if m is None:
                raise FilterError(
                    f"bad filter term {word!r}: expected KEY=VALUE (keys: {', '.join(FILTER_KEYS)})"
                )
            key, op, rest = m.group(1).lower(), m.group(2), m.group(3)
            if key not in FILTER_KEYS:
                raise FilterError(f"unknown filter key {key!r} (keys: {', '.join(FILTER_KEYS)})")
            values = tuple(v for v in rest.split(","))
            tests = tuple(_value_test(key, v) for v in values)
            terms.append((key, op == "!=", values, tests))
    return PacketFilter(tuple(terms))
