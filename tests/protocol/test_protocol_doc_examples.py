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

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
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
