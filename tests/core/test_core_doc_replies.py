"""The core's replies look exactly like the examples in docs/protocol.md: every data key (and
every key of list rows and nested objects) the core sends is documented, and vice versa."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from core_harness import ADMIN_PW, PW, Harness

from parlour.core.config import CoreConfig
from parlour.protocol import REPLY_FIELDS
from parlour.protocol.codec import FrameDecoder

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def documented_replies() -> dict[str, list[dict[str, Any]]]:
    """request type -> the ``data`` of every ``ok`` example that answers it."""
    out: dict[str, list[dict[str, Any]]] = {}
    for block in re.findall(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        types: dict[object, str] = {}
        for frame in FrameDecoder().feed(block.encode()):
            assert isinstance(frame, dict)
            if frame["type"] == "ok":
                out.setdefault(types[frame["id"]], []).append(frame["data"])
            elif frame["type"] not in ("error", "event"):
                types[frame["id"]] = frame["type"]
    return out


def shape(value: Any) -> Any:
    """Keys of an object, recursively; a list of objects becomes the shape of its rows."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        rows = [shape(v) for v in value]
        return [set().union(*(r.keys() for r in rows))]
    return None


def keys_of(s: Any) -> set[str]:
    return set(s) if isinstance(s, dict) else set()


def documented_events() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for block in re.findall(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        for frame in FrameDecoder().feed(block.encode()):
            assert isinstance(frame, dict)
            if frame["type"] == "event":
                out.setdefault(frame["event"], set()).update(frame)
    return out


def every_reply(h: Harness | None = None) -> dict[str, dict[str, Any]]:
    """One ``ok`` reply of every request type, with non-empty lists where there are any."""
    h = h or Harness(
        CoreConfig(
            rate_burst=1000,
            duplicate_login="allow",
            file_relay=(None, 7878),
            upload_url="/files/uploads",
        )
    )
    got: dict[str, dict[str, Any]] = {}

    def ok(conn: int, kind: str, **fields: Any) -> None:
        got.setdefault(kind, h.ok(conn, kind, **fields))

    c = h.connect(hello=False)
    ok(c, "hello", version=1)
    ok(c, "ping")
    ok(c, "signup", username="alice", password=PW)
    bob = h.signup("bob")
    h.ok(bob, "join", room="general")
    h.ok(bob, "send", room="general", text="hi", client_id="b1")
    ok(c, "rooms")
    ok(c, "join", room="general")
    ok(c, "send", room="general", text="hello", client_id="a1")
    ok(c, "history", room="general")
    ok(c, "since", ts=0)
    ok(c, "edit", room="general", seq=2, text="hello!")
    ok(c, "delete", room="general", seq=2)
    ok(c, "dm", to="bob", text="psst", client_id="d1")
    h.ok(c, "dm", to="bob", text="psst 2", client_id="d2")
    h.ok(c, "edit", peer="bob", seq=2, text="psst 2!")
    h.ok(c, "delete", peer="bob", seq=2)
    h.login("alice")  # a second session: it hears the read marker move
    ok(c, "mark_read", room="general", seq=1)
    h.ok(bob, "send", room="general", text="@alice look", client_id="b2")
    ok(c, "unread")
    ok(c, "who", room="general", since=3600)
    ok(c, "block", user="bob")
    ok(c, "blocks")
    ok(c, "unblock", user="bob")
    ok(c, "sync", resume={"rooms": {"general": 0}, "dms": {}})
    ok(c, "file_probe")
    ok(c, "file_token", size=10)
    here = [{"host": "192.0.2.1", "port": 5000}]
    sha = "ab" * 32
    ok(c, "file_offer", to="bob", filename="a.txt", size=1, sha256=sha, endpoints=here)
    offered = got["file_offer"]
    ok(bob, "file_accept", offer=offered["offer"], endpoints=here)
    ok(bob, "file_done", offer=offered["offer"])
    offered = h.ok(c, "file_offer", to="bob", filename="b.txt", size=1, sha256=sha)
    ok(bob, "file_decline", offer=offered["offer"])
    offered = h.ok(c, "file_offer", to="bob", filename="c.txt", size=1, sha256=sha)
    ok(c, "file_cancel", offer=offered["offer"])
    ok(c, "passwd", old_password=PW, new_password="another-password")
    ok(c, "logout")  # bob hears alice go offline (presence)
    ok(c, "login", username="alice", password="another-password")
    ok(c, "leave", room="general")
    admin = h.login("admin", ADMIN_PW)
    for kind, fields in [
        ("room_create", {"room": "ops"}),
        ("room_rename", {"room": "ops", "new_name": "operations"}),
        ("room_delete", {"room": "operations"}),
        ("broadcast", {"text": "hi all"}),
        ("kick", {"user": "bob", "reason": "x"}),
        ("ban", {"user": "bob", "duration": 60, "reason": "spam"}),
        ("bans", {}),
        ("unban", {"user": "bob"}),
        ("audit", {}),
    ]:
        if kind == "ban":
            h.login("bob")  # back after the kick, so the ban has a session to end
        ok(admin, kind, **fields)
    return got


def test_every_reply_matches_the_documented_shape() -> None:
    docs = documented_replies()
    replies = every_reply()
    assert set(replies) == set(REPLY_FIELDS) == set(docs)
    for kind, data in replies.items():
        actual = shape(data)
        documented = [shape(d) for d in docs[kind]]
        allowed = set().union(*(keys_of(d) for d in documented))
        assert keys_of(actual) <= allowed, f"{kind}: undocumented {keys_of(actual) - allowed}"
        for key, sub in actual.items():
            samples = [d[key] for d in documented if key in d]
            if isinstance(sub, list) and sub:
                rows = [s[0] for s in samples if isinstance(s, list) and s]
                assert rows, f"{kind}.{key}: no documented example row"
                assert sub[0] in rows, f"{kind}.{key} rows: {sub[0]} not in {rows}"
            elif isinstance(sub, dict):
                documented_keys = set().union(*(keys_of(s) for s in samples))
                assert keys_of(sub) == documented_keys, f"{kind}.{key}"


def test_every_event_matches_the_documented_fields() -> None:
    h = Harness(
        CoreConfig(
            rate_burst=1000,
            duplicate_login="allow",
            file_relay=(None, 7878),
            upload_url="/files/uploads",
        )
    )
    every_reply(h)
    documented = documented_events()
    seen: dict[str, set[str]] = {}
    for out in h.outcomes:
        for d in out.deliveries:
            wire = d.event.to_wire()
            seen.setdefault(wire["event"], set()).update(wire)
    # `disconnect` is written by the transport's hub from Outcome.close, not by the core
    assert set(seen) == set(documented) - {"disconnect"}
    for name, keys in seen.items():
        assert keys == documented[name], f"{name}: {keys ^ documented[name]}"
