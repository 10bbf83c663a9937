"""Every ```json block of docs/protocol.md must be valid protocol frames."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from parlour.protocol import (
    EVENT_FIELDS,
    REPLY_FIELDS,
    ErrorCode,
    EventName,
    FrameDecoder,
    Ok,
    ProtocolError,
    parse_event,
    parse_reply,
    parse_request,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "protocol.md"
#: the server side: every error code it can send is used in one of these packages
SERVER_SOURCES = [
    path
    for pkg in ("protocol", "core", "transports", "server")
    for path in sorted((ROOT / "src" / "parlour" / pkg).rglob("*.py"))
    if path.name != "errors.py"
]
BLOCKS = re.findall(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def frames(block: str) -> list[dict[str, Any]]:
    out = FrameDecoder().feed(block.encode())
    for item in out:
        assert not isinstance(item, ProtocolError), item
    return out  # type: ignore[return-value]


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) >= 25


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_block_is_valid(block: str) -> None:
    request_types: dict[object, str] = {}
    for obj in frames(block):
        kind = obj.get("type")
        if kind == "event":
            parse_event(obj)
        elif kind in ("ok", "error"):
            reply = parse_reply(obj)
            if isinstance(reply, Ok):
                rtype = request_types[reply.id]  # every ok example follows its request
                missing = REPLY_FIELDS[rtype] - reply.data.keys()
                assert not missing, f"{rtype} reply lacks {missing}"
            else:
                assert reply.code in set(ErrorCode), reply.code
        else:
            req = parse_request(obj)
            request_types[req.id] = req.TYPE


def test_every_request_event_and_error_code_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    seen_requests: set[str] = set()
    seen_events: set[str] = set()
    for block in BLOCKS:
        for obj in frames(block):
            if obj["type"] == "event":
                seen_events.add(obj["event"])
            elif obj["type"] not in ("ok", "error"):
                seen_requests.add(obj["type"])
    assert seen_requests == set(REPLY_FIELDS)
    assert seen_events == {e.value for e in EventName} == {e.value for e in EVENT_FIELDS}
    for code in ErrorCode:
        assert f"| `{code.value}` |" in text, code


def test_every_error_code_has_an_example() -> None:
    """Each code appears in an example: as an error reply or as a disconnect event's code."""
    shown: set[str] = set()
    for block in BLOCKS:
        for obj in frames(block):
            if obj["type"] == "error" or obj.get("event") == "disconnect":
                shown.add(obj["code"])
    assert shown <= {c.value for c in ErrorCode}, shown - {c.value for c in ErrorCode}
    assert {c.value for c in ErrorCode} <= shown, {c.value for c in ErrorCode} - shown


def emitted_codes() -> set[str]:
    """Error / disconnect codes the server code sends: ``ErrorCode.X`` references plus
    literal codes handed to the hub's disconnect frame."""
    found: set[str] = set()
    for path in SERVER_SOURCES:
        text = path.read_text(encoding="utf-8")
        for name in re.findall(r"ErrorCode\.([A-Z0-9_]+)", text):
            found.add(ErrorCode[name].value)
        found.update(re.findall(r"disconnect_frame\(\s*\"([a-z0-9_]+)\"", text))
    return found


def test_the_server_sends_exactly_the_documented_codes() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## Error codes")[1].split("\n## ")[0]
    table = set(re.findall(r"^\| `([a-z0-9_]+)`", section, re.M))
    assert table == {c.value for c in ErrorCode}
    emitted = emitted_codes()
    assert emitted - table == set(), "sent but not documented"
    assert table - emitted == set(), "documented but never sent"


def test_disconnect_codes_listed_in_the_session_section() -> None:
    session = DOC.read_text(encoding="utf-8").split("## Session life cycle")[1].split("##")[0]
    listed = set(re.findall(r"`([a-z_]+)`", session))
    for block in BLOCKS:
        for obj in frames(block):
            if obj.get("event") == "disconnect":
                assert obj["code"] in listed, obj["code"]
