"""``build --send`` (raw socket, root) and ``build --replay HOST:PORT`` (a real kernel TCP
connection): the error paths, and the real paths verified by capturing what went out."""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from packets_helpers import EXAMPLE_CSV, TSHARK, run_tshark_fields

from parlour.packets.build.conversation import build_conversations
from parlour.packets.build.messages import load_messages
from parlour.packets.capture.live import CaptureLimits, LiveCapture, capture_to_file
from parlour.packets.capture.replay import ReplayError, replay_messages
from parlour.packets.cli import packets
from parlour.packets.files.reader import read_capture

IS_ROOT = os.geteuid() == 0
root = pytest.mark.skipif(not IS_ROOT, reason="needs root (raw and AF_PACKET sockets)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _csv(tmp_path: Path, port: int) -> Path:
    rows = [
        "msg_id,app_protocol,src_app,dst_app,src_port,dst_port,message,timestamp",
        f"1,CHAT,alice,server,{port + 1 if port < 65535 else port - 1},{port},hello,0.001",
        f"2,CHAT,server,alice,{port},{port + 1 if port < 65535 else port - 1},welcome,0.002",
        f"3,CHAT,alice,server,{port + 1 if port < 65535 else port - 1},{port},bye,0.003",
    ]
    path = tmp_path / "m.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


class _Listener:
    """A TCP listener on 127.0.0.1:0 that records everything one client sends, until EOF."""

    def __init__(self, reply: bytes = b"") -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.received = b""
        self.done = threading.Event()
        self._reply = reply
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(10)
            if self._reply:
                conn.sendall(self._reply)
            while chunk := conn.recv(65536):
                self.received += chunk
        self.done.set()

    def close(self) -> None:
        self.sock.close()


def test_send_without_permission_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*_args: object) -> socket.socket:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("parlour.packets.capture.rawsend.socket.socket", denied)
    res = CliRunner().invoke(packets, ["build", str(EXAMPLE_CSV), "--send"])
    assert res.exit_code == 1
    assert "needs root (or CAP_NET_RAW)" in res.output
    assert "--replay" in res.output
    assert "Traceback" not in res.output


def test_replay_sends_every_client_message_in_order(tmp_path: Path) -> None:
    listener = _Listener(reply=b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    try:
        res = CliRunner().invoke(
            packets,
            ["build", str(EXAMPLE_CSV), "--replay", f"127.0.0.1:{listener.port}", "--speed", "20"],
        )
        assert res.exit_code == 0, res.output
        assert listener.done.wait(10)
    finally:
        listener.close()
    msgs = load_messages(EXAMPLE_CSV, framing="auto")
    client = [m.payload for m in msgs if m.src.name == "client_browser"]
    assert listener.received == b"".join(client)
    assert listener.received.startswith(b"GET /index.html HTTP/1.1\r\n\r\nGET /style.css")
    assert f"replayed {len(client)} messages" in res.output
    assert "received 38 bytes" in res.output


def test_replay_errors_are_clear(tmp_path: Path) -> None:
    msgs = load_messages(EXAMPLE_CSV, framing="auto")
    with pytest.raises(ReplayError, match="expected HOST:PORT"):
        replay_messages(msgs, "localhost")
    with pytest.raises(ReplayError, match="no messages"):
        replay_messages([], "127.0.0.1:80")
    port = _free_port()  # nothing listens there now
    res = CliRunner().invoke(packets, ["build", str(EXAMPLE_CSV), "--replay", f"127.0.0.1:{port}"])
    assert res.exit_code == 1
    assert f"cannot connect to 127.0.0.1:{port}" in res.output


@pytest.mark.root
@root
def test_send_puts_the_built_datagrams_on_loopback(tmp_path: Path) -> None:
    port = _free_port()
    csv = _csv(tmp_path, port)
    built = build_conversations(load_messages(csv, framing="auto"))
    out = tmp_path / "sent.pcap"
    ready = threading.Event()
    holder: dict[str, LiveCapture] = {}

    def on_ready(cap: LiveCapture) -> None:
        holder["cap"] = cap
        ready.set()

    last_seen = threading.Event()

    def on_packet(_ts: int, frame: bytes) -> None:
        if frame[14:] == built[-1].datagram:
            last_seen.set()

    t = threading.Thread(
        target=capture_to_file,
        args=(out,),
        kwargs={"port": port, "limits": CaptureLimits(seconds=30), "ready": on_ready,
                "on_packet": on_packet},
        daemon=True,
    )  # fmt: skip
    t.start()
    assert ready.wait(10)
    res = CliRunner().invoke(packets, ["build", str(csv), "--send"])
    assert last_seen.wait(10), "the last packet never showed up on loopback"
    holder["cap"].stop()
    t.join(10)
    assert res.exit_code == 0, res.output
    assert f"sent {len(built)} packets" in res.output
    seen = [r.data[14:] for r in read_capture(out)]  # strip loopback's Ethernet header
    # the kernel has no socket for these made-up connections and answers with RSTs; every
    # packet we built went out unchanged, in order
    ours = [d for d in seen if d in {p.datagram for p in built}]
    assert ours == [p.datagram for p in built]
    if TSHARK:
        rows = run_tshark_fields(out, "ip.checksum.status", "tcp.checksum.status", "tcp.payload")
        assert {r[0] for r in rows} == {"1"} and {r[1] for r in rows} == {"1"}  # 1: good
        payloads = [bytes.fromhex(r[2].replace(":", "")) for r in rows if r[2]]
        assert b"hello\n" in payloads and b"bye\n" in payloads


@pytest.mark.root
@root
def test_replay_traffic_can_be_captured(tmp_path: Path) -> None:
    listener = _Listener()
    out = tmp_path / "replay.pcap"
    ready = threading.Event()
    holder: dict[str, LiveCapture] = {}

    def on_ready(cap: LiveCapture) -> None:
        holder["cap"] = cap
        ready.set()

    t = threading.Thread(
        target=capture_to_file,
        args=(out,),
        kwargs={"port": listener.port, "limits": CaptureLimits(seconds=30), "ready": on_ready},
        daemon=True,
    )
    t.start()
    try:
        assert ready.wait(10)
        msgs = load_messages(EXAMPLE_CSV, framing="auto")
        report = replay_messages(msgs, f"127.0.0.1:{listener.port}", speed=50, linger=0.05)
        assert listener.done.wait(10)
    finally:
        holder["cap"].stop()
        t.join(10)
        listener.close()
    assert report.sent_messages == 5
    if TSHARK:
        rows = run_tshark_fields(out, "http.request.method", "http.request.uri",
                                 "tcp.analysis.flags")  # fmt: skip
        uris = [r[1] for r in rows if r[0]]
        assert uris == ["/index.html", "/style.css", "/script.js", "/login", "/dashboard"]
        assert not [r for r in rows if r[2]]


def test_replay_reports_a_listener_that_hangs_up_early() -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def answer_once_and_close() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    t = threading.Thread(target=answer_once_and_close, daemon=True)
    t.start()
    try:
        res = CliRunner().invoke(
            packets, ["build", str(EXAMPLE_CSV), "--replay", f"127.0.0.1:{port}", "--speed", "20"]
        )
    finally:
        t.join(10)
        srv.close()
    assert res.exit_code == 1
    # the first write after the listener's FIN may still be accepted by the kernel
    assert re.search(rf"127\.0\.0\.1:{port} closed the connection after [1-4] of 5", res.output)


def _http_csv(tmp_path: Path, cport: int, sport: int) -> Path:
    text = EXAMPLE_CSV.read_text().replace(",51874,", f",{cport},").replace(",80,", f",{sport},")
    path = tmp_path / "http.csv"
    path.write_text(text)
    return path


def test_loopback_replay_plays_both_sides_in_order(tmp_path: Path) -> None:
    csv = _http_csv(tmp_path, _free_port(), _free_port())
    res = CliRunner().invoke(packets, ["build", str(csv), "--replay", "loopback", "--speed", "50"])
    assert res.exit_code == 0, res.output
    msgs = load_messages(csv, framing="auto")
    total = sum(len(m.payload) for m in msgs)
    assert f"replayed 10 messages ({total} bytes) to loopback (both sides)" in res.output
    assert f"received {total} bytes" in res.output


def test_loopback_replay_errors_are_clear(tmp_path: Path) -> None:
    res = CliRunner().invoke(packets, ["build", str(EXAMPLE_CSV), "--replay", "loopback",
                                       "--hosts", "web_server=10.0.0.1"])  # fmt: skip
    assert res.exit_code == 1
    assert (
        "loopback replay needs 127.x.x.x addresses, but web_server maps to 10.0.0.1" in res.output
    )
    with socket.create_server(("127.0.0.1", 0)) as busy:
        csv = _http_csv(tmp_path, _free_port(), busy.getsockname()[1])
        res = CliRunner().invoke(packets, ["build", str(csv), "--replay", "loopback"])
    assert res.exit_code == 1
    assert "cannot listen on 127.0.0.1:" in res.output


@pytest.mark.root
@root
def test_loopback_replay_capture_is_the_whole_conversation(tmp_path: Path) -> None:
    sport = _free_port()
    csv = _http_csv(tmp_path, _free_port(), sport)
    out = tmp_path / "loop.pcap"
    ready = threading.Event()
    holder: dict[str, LiveCapture] = {}
    done = threading.Event()
    fins: list[int] = []

    def on_ready(cap: LiveCapture) -> None:
        holder["cap"] = cap
        ready.set()

    def on_packet(_ts: int, frame: bytes) -> None:
        if frame[14 + 20 + 13] & 0x01:  # FIN
            fins.append(1)
        if len(fins) == 2 and frame[14 + 20 + 13] == 0x10:
            done.set()  # the ACK of the last FIN

    t = threading.Thread(
        target=capture_to_file,
        args=(out,),
        kwargs={"port": sport, "limits": CaptureLimits(seconds=30), "ready": on_ready,
                "on_packet": on_packet},
        daemon=True,
    )  # fmt: skip
    t.start()
    assert ready.wait(10)
    res = CliRunner().invoke(packets, ["build", str(csv), "--replay", "loopback", "--speed", "50"])
    assert res.exit_code == 0, res.output
    assert done.wait(10)
    holder["cap"].stop()
    t.join(10)
    rows = run_tshark_fields(out, "tcp.flags.str", "tcp.payload", "tcp.analysis.flags",
                             extra=("-d", f"tcp.port=={sport},http"))  # fmt: skip
    payloads = [bytes.fromhex(r[1].replace(":", "")) for r in rows if r[1]]
    assert payloads == [m.payload for m in load_messages(csv, framing="auto")]
    assert not [r for r in rows if r[2]]
    assert not [r for r in rows if "R" in r[0]]  # no resets


def test_send_refuses_addresses_off_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[object] = []
    monkeypatch.setattr(
        "parlour.packets.capture.rawsend.socket.socket", lambda *a: opened.append(a)
    )
    res = CliRunner().invoke(packets, ["build", str(EXAMPLE_CSV), "--send",
                                       "--hosts", "web_server=10.0.0.1"])  # fmt: skip
    assert res.exit_code == 1
    assert "refusing to send to 10.0.0.1: --send only puts packets on loopback" in res.output
    assert opened == []  # nothing was sent, no socket was even opened


def test_replay_plays_every_connection_not_just_the_first(tmp_path: Path) -> None:
    """Two browsers (two client ports) talk to the same server: both connections are
    replayed, each with its own client's messages, in order."""
    header = "msg_id,app_protocol,src_app,dst_app,src_port,dst_port,message,timestamp"
    rows = [
        "1,HTTP,b1,web,40001,80,GET /one HTTP/1.1,0.00",
        "2,HTTP,b2,web,40002,80,GET /two HTTP/1.1,0.01",
        "3,HTTP,web,b1,80,40001,HTTP/1.1 200 OK,0.02",
        "4,HTTP,b1,web,40001,80,GET /three HTTP/1.1,0.03",
    ]
    csv_path = tmp_path / "two.csv"
    csv_path.write_text("\n".join([header, *rows]) + "\n")
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    got: list[bytes] = []
    done = threading.Event()

    def serve() -> None:
        conns = [srv.accept()[0] for _ in range(2)]
        for conn in conns:
            with conn:
                conn.settimeout(10)
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                got.append(data)
        done.set()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        res = CliRunner().invoke(
            packets, ["build", str(csv_path), "--replay", f"127.0.0.1:{port}", "--speed", "20"]
        )
        assert res.exit_code == 0, res.output
        assert done.wait(10)
    finally:
        srv.close()
    assert sorted(got) == [
        b"GET /one HTTP/1.1\r\n\r\nGET /three HTTP/1.1\r\n\r\n", b"GET /two HTTP/1.1\r\n\r\n",
    ]  # fmt: skip
    assert "replayed 3 messages" in res.output and "over 2 connections" in res.output
