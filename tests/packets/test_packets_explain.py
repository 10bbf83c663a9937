"""``analyze --explain`` on a chat capture: the story the source design walked through by hand
(a username segment, the server's reply, a message and the server forwarding it to the other
user), told across connections — who is logged in where (not after a failed login), which
packet of one connection the server relays to which packet of another, and whom a DM is for.

The capture is built from the chat protocol's real lines (``parlour.protocol`` checks every
one decodes), two clients on their own connections to the server's port."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from parlour.packets.analyze.dissect import Analysis, analyze
from parlour.packets.analyze.explain import explain_analysis
from parlour.packets.build.conversation import AppMessage, Endpoint, build_conversations
from parlour.packets.build.writers import LinkOptions, write_capture_file
from parlour.protocol import decode_line

SERVER = Endpoint("127.0.0.1", 7878, "server")
ALICE = Endpoint("127.0.0.1", 40001, "alice's client")
BOB = Endpoint("127.0.0.1", 40002, "bob's client")
T0 = 1_700_000_000_000_000_000


def line(**obj: Any) -> bytes:
    raw = json.dumps(obj).encode() + b"\n"
    assert isinstance(decode_line(raw.rstrip(b"\n")), dict)  # a line the codec accepts
    return raw


def event(name: str, **fields: Any) -> bytes:
    return line(type="event", event=name, **fields)


def ok(rid: int, **data: Any) -> bytes:
    return line(id=rid, type="ok", data=data)


#: (client, from the client?, line); one message every 10 ms
SCRIPT: list[tuple[Endpoint, bool, bytes]] = [
    (ALICE, True, line(id=1, type="login", username="alice", password="pw-alice-1")),
    (ALICE, False, ok(1, username="alice", role="user", rooms=["general"])),
    # bob mistypes his password: his connection must stay anonymous until the right one
    (BOB, True, line(id=1, type="login", username="bob", password="wrong-password")),
    (BOB, False, line(id=1, type="error", code="bad_credentials", message="wrong password")),
    (BOB, True, line(id=2, type="send", room="general", text="anyone?", client_id="b0")),
    (BOB, False, line(id=2, type="error", code="not_authenticated", message="log in first")),
    (BOB, True, line(id=3, type="login", username="bob", password="pw-bob-22")),
    (BOB, False, ok(3, username="bob", role="user", rooms=["general"])),
    (ALICE, True, line(id=2, type="send", room="general", text="hello bob", client_id="a1")),
    (ALICE, False, event("message", room="general", seq=1, ts=1.0, **{"from": "alice"},
                         text="hello bob", edited=None, deleted=False, client_id="a1")),
    (BOB, False, event("message", room="general", seq=1, ts=1.0, **{"from": "alice"},
                       text="hello bob", edited=None, deleted=False, client_id=None)),
    (ALICE, False, ok(2, room="general", seq=1, ts=1.0, client_id="a1", duplicate=False)),
    (ALICE, True, line(id=3, type="dm", to="bob", text="psst, lunch?", client_id="a2")),
    (BOB, False, event("dm", peer="alice", seq=1, ts=2.0, **{"from": "alice"},
                       text="psst, lunch?", edited=None, deleted=False, client_id=None)),
    (ALICE, False, ok(3, peer="bob", seq=1, ts=2.0, client_id="a2", duplicate=False)),
]  # fmt: skip


@pytest.fixture(scope="module")
def chat(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    messages = [
        AppMessage(client, SERVER, data, T0 + i * 10_000_000) if up
        else AppMessage(SERVER, client, data, T0 + i * 10_000_000)
        for i, (client, up, data) in enumerate(SCRIPT)
    ]  # fmt: skip
    path = tmp_path_factory.mktemp("chat") / "chat.pcap"
    write_capture_file(path, build_conversations(messages), LinkOptions("raw", {}), "pcap")
    return analyze(path)


def number_of(result: Analysis, port: int, needle: str, count: int = 1) -> int:
    """The (first) packet on the connection of *port* whose decoded line contains *needle*
    (*count* of them must)."""
    found = [
        pa.packet.number for pa in result.packets
        if pa.tcp and port in (pa.tcp.sport, pa.tcp.dport) and pa.app and needle in pa.app[1]
    ]  # fmt: skip
    assert len(found) == count, (needle, found)
    return found[0]


def test_a_failed_login_leaves_the_connection_anonymous(chat: Analysis) -> None:
    story = "\n".join(explain_analysis(chat))
    attempt = number_of(chat, BOB.port, "login bob", count=2)
    accepted = number_of(chat, BOB.port, "ok #3")
    assert (
        f"(the server refuses the login of 'bob' from packet {attempt}: bad_credentials; "
        "the connection stays the client 127.0.0.1:40002)"
    ) in story
    bob_lines = [s for s in story.splitlines() if re.match(r"\s+\d+\s", s)]
    for s in bob_lines:
        number = int(s.split()[0])
        if "127.0.0.1:40002" not in s or number == accepted:
            continue
        # before the server accepted bob's second login, nobody calls this client bob
        assert ("bob (127.0.0.1:40002)" in s) == (number > accepted), s
    # alice logged in right away: her connection is hers from the reply on
    assert "alice (127.0.0.1:40001) sends" in story


def test_the_relay_across_connections(chat: Analysis) -> None:
    story = explain_analysis(chat)
    across = story[story.index("Across the conversations:") + 1 :]
    sent = number_of(chat, ALICE.port, "send #general: hello bob")
    echo = number_of(chat, ALICE.port, "#general ← alice: hello bob")
    relayed = number_of(chat, BOB.port, "#general ← alice: hello bob")
    bob_stream = next(c.stream for c in chat.conversations if c.client[1] == BOB.port)
    assert (
        f"  alice's message to #general in packet {sent} ('hello bob'): the server echoes it "
        f"back to alice in packet {echo}, and relays it to bob in packet {relayed} "
        f"(conversation {bob_stream})"
    ) in across
    # bob's message while not logged in is not his yet, and the server refused it
    bob_try = number_of(chat, BOB.port, "send #general: anyone?")
    refused = number_of(chat, BOB.port, "error #2 not_authenticated")
    assert (
        f"  the client of conversation {bob_stream}'s message to #general in packet {bob_try} "
        f"('anyone?'): the server refuses it in packet {refused} (not_authenticated); nobody "
        "else sees it"
    ) in across


def test_a_dm_shows_its_recipient(chat: Analysis) -> None:
    sent = number_of(chat, ALICE.port, "dm → bob: psst, lunch?")
    delivered = number_of(chat, BOB.port, "dm alice → bob: psst, lunch?")
    bob_stream = next(c.stream for c in chat.conversations if c.client[1] == BOB.port)
    assert (
        f"  alice's DM to bob in packet {sent} ('psst, lunch?'): the server relays it to bob "
        f"in packet {delivered} (conversation {bob_stream})"
    ) in explain_analysis(chat)


def test_secrets_never_appear(chat: Analysis) -> None:
    story = "\n".join(explain_analysis(chat))
    assert "pw-alice-1" not in story and "wrong-password" not in story
    assert "pw-bob-22" not in story
