"""Read the lab's message CSV and the host-name → IPv4 mapping."""

from __future__ import annotations

import codecs
import csv
import io
import math
from collections.abc import Mapping
from pathlib import Path

from parlour.packets.build.conversation import ANOMALIES, DEFAULT_START_NS, AppMessage, Endpoint
from parlour.packets.wire.addresses import ipv4_to_bytes

__all__ = [
    "CRLF_PROTOCOLS",
    "CSV_COLUMNS",
    "FRAMINGS",
    "MAX_FIELD",
    "MessageFileError",
    "frame_payload",
    "load_messages",
    "parse_hosts",
    "parse_messages",
    "read_hosts_file",
]

CSV_COLUMNS = (
    "msg_id",
    "app_protocol",
    "src_app",
    "dst_app",
    "src_port",
    "dst_port",
    "message",
    "timestamp",
)
#: CSV times below this many seconds are relative to the start time; above, epoch seconds
_ABSOLUTE_AFTER = 1_000_000_000


#: how a message becomes bytes on the wire
FRAMINGS = ("auto", "raw", "line", "crlf", "http")
#: line-based protocols whose lines end in CR LF (``auto`` framing)
CRLF_PROTOCOLS = frozenset({"SMTP", "ESMTP", "LMTP", "FTP", "POP3", "POP", "IMAP", "IMAP4",
                            "TELNET", "IRC", "NNTP", "SIP", "RTSP"})  # fmt: skip
#: a message may be this long (the csv module's own default limit is 131,072 characters)
MAX_FIELD = 64 * 1024 * 1024
#: latest time a capture can hold: pcapng counts 64-bit ticks; a pcap's seconds are 32 bits
MAX_TS_NS = (1 << 63) - 1


def frame_payload(payload: bytes, app_protocol: str, framing: str = "auto") -> bytes:
    """Terminate *payload* as the application would.

    ``raw``: as written. ``line``: add ``\n`` (Parlour chat's NDJSON). ``crlf``: add
    ``\r\n``. ``http``: make a complete header-only HTTP message (requests end with a blank
    line; responses also get ``Content-Length: 0`` so the next response is not read as their
    body). ``auto``: ``http`` for HTTP rows, ``line`` for PARLOUR/CHAT rows, ``crlf`` for
    SMTP, FTP, POP3, IMAP, Telnet and the other CR LF line protocols, else ``raw``.
    """
    if framing == "auto":
        proto = app_protocol.strip().upper()
        framing = (
            "http" if proto == "HTTP"
            else "line" if proto in ("PARLOUR", "CHAT")
            else "crlf" if proto in CRLF_PROTOCOLS
            else "raw"
        )  # fmt: skip
    if framing == "raw":
        return payload
    if framing == "line":
        return payload if payload.endswith(b"\n") else payload + b"\n"
    if framing == "crlf":
        return payload if payload.endswith(b"\r\n") else payload + b"\r\n"
    if framing == "http":
        if payload.endswith(b"\r\n\r\n"):
            return payload
        head = payload.rstrip(b"\r\n")
        if head.startswith(b"HTTP/") and b"\ncontent-length:" not in head.lower():
            head += b"\r\nContent-Length: 0"
        return head + b"\r\n\r\n"
    raise ValueError(f"unknown framing {framing!r} (choose from {', '.join(FRAMINGS)})")


class MessageFileError(ValueError):
    """The message CSV or host mapping is unusable; the text says where and why."""


def parse_hosts(spec: str) -> dict[str, str]:
    """``client_browser=10.0.0.2,web_server=10.0.0.1`` → mapping (checked addresses)."""
    hosts: dict[str, str] = {}
    for item in spec.replace("\n", ",").split(","):
        item = item.strip()
        if not item or item.startswith("#"):
            continue
        name, sep, ip = item.partition("=")
        if not sep:
            parts = item.split()
            if len(parts) != 2:
                raise MessageFileError(f"host mapping {item!r}: expected name=address")
            name, ip = parts
        name, ip = name.strip(), ip.strip()
        try:
            ipv4_to_bytes(ip)
        except ValueError as exc:
            raise MessageFileError(f"host mapping for {name!r}: {exc}") from None
        hosts[name] = ip
    return hosts


def read_hosts_file(path: str | Path) -> dict[str, str]:
    """A mapping file: one ``name=address`` or ``name address`` per line, ``#`` comments."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MessageFileError(f"cannot read host mapping {path}: {exc.strerror}") from exc
    return parse_hosts("\n".join(line.split("#", 1)[0] for line in text.splitlines()))


def _port(value: str, column: str, line: int) -> int:
    try:
        port = int(value)
    except ValueError:
        raise MessageFileError(f"line {line}: {column} {value!r} is not a number") from None
    if not 0 < port <= 0xFFFF:
        raise MessageFileError(f"line {line}: {column} {port} is out of range 1-65535")
    return port


def parse_messages(
    text: str,
    hosts: Mapping[str, str] | None = None,
    *,
    default_ip: str = "127.0.0.1",
    start_ns: int = DEFAULT_START_NS,
    unescape: bool = False,
    framing: str = "raw",
    anomaly: str = "",
) -> list[AppMessage]:
    """Messages from CSV text with the lab's columns (extra columns are ignored).

    Optional columns: ``client`` (the app that opens the connection), ``connection`` (a label:
    another label on the same ports starts a new connection) and ``anomaly`` (see
    :data:`~parlour.packets.build.conversation.ANOMALIES`); *anomaly* applies to every row
    that names none. Line endings inside quoted fields are kept (read the file with
    ``newline=""``, as :func:`load_messages` does)."""
    hosts = hosts or {}
    old_limit = csv.field_size_limit(MAX_FIELD)
    try:
        return _parse(text, hosts, default_ip, start_ns, unescape, framing, anomaly)
    except csv.Error as exc:
        raise MessageFileError(f"not a readable CSV file: {exc}") from None
    finally:
        csv.field_size_limit(old_limit)


def _parse(
    text: str, hosts: Mapping[str, str], default_ip: str, start_ns: int, unescape: bool,
    framing: str, anomaly: str,
) -> list[AppMessage]:  # fmt: skip
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise MessageFileError(f"CSV is missing column(s): {', '.join(missing)}")
    out: list[AppMessage] = []
    for row in reader:
        line = reader.line_num
        if any(row.get(c) is None for c in CSV_COLUMNS):
            raise MessageFileError(f"line {line}: too few fields")
        try:
            ts = float(row["timestamp"])
        except ValueError:
            raise MessageFileError(
                f"line {line}: timestamp {row['timestamp']!r} is not a number"
            ) from None
        if not math.isfinite(ts) or ts < 0:
            raise MessageFileError(f"line {line}: timestamp {row['timestamp']!r} is out of range")
        if ts * 1e9 > MAX_TS_NS or (ts < _ABSOLUTE_AFTER and start_ns + ts * 1e9 > MAX_TS_NS):
            ts_ns = MAX_TS_NS + 1
        else:
            ts_ns = round(ts * 1e9) if ts >= _ABSOLUTE_AFTER else start_ns + round(ts * 1e9)
        if ts_ns > MAX_TS_NS:
            raise MessageFileError(
                f"line {line}: timestamp {row['timestamp']!r} is out of range (a capture holds "
                "times up to the year 2262)"
            )
        text_value = row["message"]
        if unescape:
            try:
                text_value = codecs.decode(text_value, "unicode_escape")
            except UnicodeDecodeError as exc:
                raise MessageFileError(f"line {line}: bad escape in message: {exc}") from None
            payload = text_value.encode("latin-1", "backslashreplace")
        else:
            payload = text_value.encode("utf-8")
        src_name, dst_name = row["src_app"].strip(), row["dst_app"].strip()
        src = Endpoint(
            hosts.get(src_name, default_ip), _port(row["src_port"], "src_port", line), src_name
        )
        dst = Endpoint(
            hosts.get(dst_name, default_ip), _port(row["dst_port"], "dst_port", line), dst_name
        )
        if (src.ip, src.port) == (dst.ip, dst.port):
            raise MessageFileError(
                f"line {line}: {src_name} and {dst_name} map to the same address and port"
            )
        opener = ""
        client = (row.get("client") or "").strip()
        if client:
            if client not in (src_name, dst_name):
                raise MessageFileError(
                    f"line {line}: client {client!r} is neither {src_name!r} nor {dst_name!r}"
                )
            opener = "src" if client == src_name else "dst"
        bad = (row.get("anomaly") or "").strip() or anomaly
        names = [a.strip() for a in bad.replace(";", ",").split(",") if a.strip()]
        unknown = [a for a in names if a not in ANOMALIES]
        if unknown:
            raise MessageFileError(
                f"line {line}: unknown anomaly {unknown[0]!r} (choose from {', '.join(ANOMALIES)})"
            )
        payload = frame_payload(payload, row["app_protocol"], framing)
        out.append(AppMessage(
            src, dst, payload, ts_ns, row["msg_id"], row["app_protocol"], opener,
            (row.get("connection") or "").strip(), ",".join(names),
        ))  # fmt: skip
    return out


def load_messages(
    path: str | Path,
    hosts: Mapping[str, str] | None = None,
    *,
    default_ip: str = "127.0.0.1",
    start_ns: int = DEFAULT_START_NS,
    unescape: bool = False,
    framing: str = "raw",
    anomaly: str = "",
) -> list[AppMessage]:
    """:func:`parse_messages` of a file (UTF-8, BOM allowed; line endings kept as written)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except OSError as exc:
        raise MessageFileError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise MessageFileError(f"{path} is not UTF-8 text: {exc}") from exc
    return parse_messages(
        text, hosts, default_ip=default_ip, start_ns=start_ns, unescape=unescape,
        framing=framing, anomaly=anomaly,
    )  # fmt: skip
