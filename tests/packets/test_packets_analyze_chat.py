"""Real Parlour traffic: two clients talk through an in-process chat server; the bytes each
side really sent are recorded by a relay on 127.0.0.1 and rebuilt as TCP packets (small MSS,
so chat lines span segments); ``analyze`` decodes them back into the expected chat lines."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from parlour.core.passwords import Argon2Hasher
from parlour.packets.analyze.decode import decode_capture
from parlour.packets.analyze.dissect import analyze
from parlour.packets.analyze.explain import explain_analysis
from parlour.packets.analyze.follow import Follower
from parlour.packets.build.conversation import (
    AppMessage,
    BuildOptions,
    Endpoint,
    build_conversations,
)
from parlour.packets.build.writers import LinkOptions, write_capture_file
from parlour.packets.cli import packets as packets_cli
from parlour.server.app import ChatServer
from parlour.server.config import Settings

TIMEOUT = 15.0
Chunk = tuple[int, tuple[str, int], tuple[str, int], bytes]


class RecordingRelay:
    """Forward client connections to the server and record every chunk with its time."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.chunks: list[Chunk] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        src: tuple[str, int], dst: tuple[str, int],
    ) -> None:  # fmt: skip
        try:
            while data := await reader.read(65536):
                self.chunks.append((time.time_ns(), src, dst, data))
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        client = c_writer.get_extra_info("peername")[:2]
        server = ("127.0.0.1", self.target_port)
        await asyncio.gather(
            self._pipe(c_reader, s_writer, client, server),
            self._pipe(s_reader, c_writer, server, client),
        )

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


class Line:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.next_id = reader, writer, 1

    async def call(self, type: str, **fields: Any) -> dict[str, Any]:
        rid = self.next_id
        self.next_id += 1
        self.writer.write(json.dumps({"id": rid, "type": type, **fields}).encode() + b"\n")
        while True:
            frame = json.loads(await asyncio.wait_for(self.reader.readline(), TIMEOUT))
            if frame.get("id") == rid:
                assert frame["type"] == "ok", frame
                return frame

    async def event(self, name: str) -> dict[str, Any]:
        while True:
            frame = json.loads(await asyncio.wait_for(self.reader.readline(), TIMEOUT))
            if frame.get("type") == "event" and frame.get("event") == name:
                return frame


async def _record_chat(tmp_path: Path) -> list[Chunk]:
    settings = Settings(port=0, data_dir=tmp_path / "data", admin_password="admin-password-1")
    server = await ChatServer.start(
        settings, password_hasher=Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1)
    )
    relay = RecordingRelay(server.port)
    await relay.start()
    try:
        alice = Line(*await asyncio.open_connection("127.0.0.1", relay.port))
        await alice.call("hello", version=1)
        await alice.call("signup", username="alice", password="password-123")
        await alice.call("join", room="general")
        bob = Line(*await asyncio.open_connection("127.0.0.1", relay.port))
        await bob.call("hello", version=1)
        await bob.call("signup", username="bob", password="password-123")
        await bob.call("join", room="general")
        await bob.call("send", room="general", text="hello", client_id="b1")
        await alice.event("message")
        await alice.call("send", room="general", text="hi bob, long time no see", client_id="a1")
        await bob.event("message")
        for line in (alice, bob):
            line.writer.close()
            await line.writer.wait_closed()
    finally:
        await relay.close()
        await server.stop(grace=2)
    return relay.chunks


def _capture(chunks: list[Chunk], path: Path) -> None:
    messages = [
        AppMessage(Endpoint(*src), Endpoint(*dst), data, ts) for ts, src, dst, data in chunks
    ]
    built = build_conversations(messages, BuildOptions(mss=64))
    write_capture_file(path, built, LinkOptions("ethernet", {}), "pcapng")


async def test_real_chat_traffic_decodes_into_chat_lines(tmp_path: Path) -> None:
    chunks = await _record_chat(tmp_path)
    path = tmp_path / "chat.pcapng"
    _capture(chunks, path)
    result = analyze(decode_capture(path))
    assert len(result.conversations) == 2
    lines = [pa.app[1] for pa in result.packets if pa.app is not None]
    text = "\n".join(lines)
    assert "signup alice" in text and "signup bob" in text
    assert "send #general: hello" in text
    assert "#general ← bob: hello" in text  # the event alice receives
    assert "#general ← alice: hi bob, long time no see" in text
    assert "password-123" not in text  # secrets never shown
    # lines longer than the 64-byte MSS were reassembled: decoded on their last segment only
    partial = [pa for pa in result.packets if pa.app is None and pa.tcp and pa.tcp.seglen]
    assert len(partial) > 10
    follower = Follower(0, chat=True)
    chunks = [c for pa in result.packets for c in follower.feed(pa)] + follower.finish()
    chat = [c for c in chunks if c.text]
    assert chat and all("…" not in (c.text or "") for c in chat)
    story = "\n".join(explain_analysis(result, 0))
    assert "three-way handshake" in story
    assert "alice (127.0.0.1:" in story  # named after the login
    assert "chat lines from the client" in story
    assert (
        "bytes of a chat line a later segment completes ([TCP segment of a reassembled PDU])"
        in story
    )


async def test_cli_explain_and_follow_on_real_chat(tmp_path: Path) -> None:
    chunks = await _record_chat(tmp_path)
    path = tmp_path / "chat.pcapng"
    _capture(chunks, path)
    runner = CliRunner()
    res = runner.invoke(packets_cli, ["analyze", str(path), "--explain"])
    assert res.exit_code == 0, res.output
    assert "Conversation 0" in res.output and "Conversation 1" in res.output
    assert "'signup alice'" in res.output
    res = runner.invoke(packets_cli, ["analyze", str(path), "--follow", "--stream", "1"])
    assert res.exit_code == 0, res.output
    assert "Follow TCP stream 1" in res.output and "Follow TCP stream 0" not in res.output
    assert "signup bob" in res.output
    assert "password-123" not in res.output  # chat directions show decoded lines only
    res = runner.invoke(packets_cli, ["analyze", str(path), "--follow", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert "password-123" not in res.output and '"text": "signup alice"' in res.output
