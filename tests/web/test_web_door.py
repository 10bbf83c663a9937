"""The web listener and the WebSocket door over real sockets: static files and headers, the
Origin check, and every limit of the TCP door (frame size, pings and the idle timeout, the
slow-consumer cut-off, TLS). The whole chat end-to-end suite also runs over this door
(tests/e2e, ``framing="websocket"``)."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import ssl
from pathlib import Path

import aiohttp
import pytest
from web_helpers import TIMEOUT, ServerFactory, WsClient

from parlour.server.app import ChatServer
from parlour.transports.web import CSP, origin_allowed, origin_of
from parlour.web.assets import Assets
from ws_raw import OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT, HandshakeError


def web_port(server: ChatServer) -> int:
    assert server.web is not None
    return server.web.addresses[0][1]


# ---------------------------------------------------------------------------- static files


async def test_page_and_files_are_served_versioned_gzipped_with_security_headers(
    make_server: ServerFactory,
) -> None:
    server = await make_server()
    assert server.web is not None
    base = server.web.url
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.get(base, headers={"Accept-Encoding": "gzip"}) as r:
            assert r.status == 200 and r.headers["Cache-Control"] == "no-cache"
            assert r.headers["Content-Security-Policy"] == CSP
            assert "'unsafe-inline'" not in CSP and "frame-ancestors 'none'" in CSP
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Content-Encoding"] == "gzip"
            page = gzip.decompress(await r.read()).decode()
        version = server.web.assets.version
        urls = re.findall(r'(?:src|href)="(/static/[^"]+)"', page)
        assert urls and all(u.startswith(f"/static/{version}/") for u in urls)
        assert "<script>" not in page and " style=" not in page  # nothing inline
        for url in urls:
            plain = {"Accept-Encoding": "identity"}
            async with http.get(base.rstrip("/") + url, headers=plain) as r:
                assert r.status == 200, url
                assert r.headers["Cache-Control"] == "public, max-age=31536000, immutable"
                assert r.headers["Content-Security-Policy"] == CSP
                assert "Content-Encoding" not in r.headers  # this client did not ask for gzip
                etag = r.headers["ETag"]
            async with http.get(base.rstrip("/") + url, headers={"If-None-Match": etag}) as r:
                assert r.status == 304
        app_js = f"{base}static/{version}/app.js"
        async with http.get(app_js, headers={"Accept-Encoding": "gzip, br"}) as r:
            assert r.headers["Content-Type"].startswith("text/javascript")
            assert r.headers["Content-Encoding"] == "gzip"
            assert r.headers["Vary"] == "Accept-Encoding"
        # another version, a path outside the files, an unknown route: 404, headers still on
        for path in (
            "static/0000000000000000/app.js",
            f"static/{version}/../index.html",
            f"static/{version}/nothing.js",
            "admin",
        ):
            async with http.get(base + path) as r:
                assert r.status == 404, path
                assert r.headers["Content-Security-Policy"] == CSP
                assert r.headers["X-Frame-Options"] == "DENY"


def test_client_size_budget_and_no_html_sinks() -> None:
    assets = Assets.load()
    budget = assets.gzipped_size(".js", ".css")
    assert 0 < budget <= 60 * 1024, f"JS + CSS are {budget} bytes gzipped (budget 60 KB)"
    # no raw HTML path anywhere in our own code (the CSP requires Trusted Types as well)
    sinks = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|dangerouslySetInnerHTML|document\.write|"
        r"\beval\(|new Function|srcdoc"
    )
    own = [a for path, a in assets.files.items() if path.endswith(".js") and "vendor/" not in path]
    assert own
    for asset in own:
        found = sinks.search(asset.body.decode())
        assert found is None, f"{asset.path}: {found.group(0) if found else ''}"


def test_the_version_changes_with_any_file() -> None:
    a = Assets(b'<script src="/static/VERSION/app.js"></script>', {"app.js": b"1"})
    b = Assets(b'<script src="/static/VERSION/app.js"></script>', {"app.js": b"2"})
    assert a.version != b.version
    assert a.index.body == f'<script src="/static/{a.version}/app.js"></script>'.encode()
    assert a.get(a.version, "app.js") is not None and a.get(b.version, "app.js") is None


# ---------------------------------------------------------------------------- origin


def test_origin_rules() -> None:
    own = origin_of("http://chat.local:7879")
    assert own == "http://chat.local:7879"
    assert origin_of("https://Chat.Example.org:443/path") == "https://chat.example.org"
    assert origin_of("null") is None and origin_of("ftp://x") is None
    assert origin_allowed(None, own=own, public=None)  # not a browser page
    assert origin_allowed("http://chat.local:7879", own=own, public=None)
    assert not origin_allowed("http://evil.example", own=own, public=None)
    assert not origin_allowed("http://chat.local:7880", own=own, public=None)
    assert not origin_allowed("null", own=own, public=None)
    public = origin_of("https://chat.example.org/")
    assert origin_allowed("https://chat.example.org", own=own, public=public)
    assert not origin_allowed("http://chat.local:7879", own=own, public=public)


async def test_websocket_origin_check(make_server: ServerFactory, clients: list[WsClient]) -> None:
    server = await make_server()
    port = web_port(server)
    same = await WsClient.connect(port, origin=f"http://127.0.0.1:{port}")
    clients.append(same)
    await same.ok("hello", version=1)
    for bad in ("http://evil.example", "null", f"http://127.0.0.1:{port + 1}"):
        with pytest.raises(HandshakeError, match="403"):
            await WsClient.connect(port, origin=bad)
    assert server.web is not None and server.web.rejected_origins == 3

    public = await make_server(public_url="https://chat.example.org")
    port = web_port(public)
    ok = await WsClient.connect(port, origin="https://chat.example.org")
    clients.append(ok)
    await ok.ok("hello", version=1)
    with pytest.raises(HandshakeError, match="403"):
        await WsClient.connect(port, origin=f"http://127.0.0.1:{port}")


# ---------------------------------------------------------------------------- limits


async def test_pings_keep_a_live_peer_and_a_dead_one_times_out(
    make_server: ServerFactory, clients: list[WsClient]
) -> None:
    server = await make_server(heartbeat=0.2, idle_timeout=0.8, tick_interval=0.1)
    port = web_port(server)
    live, dead = await WsClient.connect(port), await WsClient.connect(port)
    clients += [live, dead]
    dead.answer_pings = False
    await live.ok("hello", version=1)
    await dead.ok("hello", version=1)
    bye = await dead.event("disconnect")  # neither sent anything since; only `live` answered
    assert bye["code"] == "idle_timeout"
    await dead.wait_closed()
    assert dead.close_codes == [1000]
    assert live.pings >= 2 and not live.closed.is_set()
    await live.ok("ping")  # still served
    assert server.web is not None and server.web.door.pings_sent >= live.pings


async def test_client_pings_fragments_and_binary_messages(
    make_server: ServerFactory, clients: list[WsClient]
) -> None:
    server = await make_server()
    c = await WsClient.connect(web_port(server))
    clients.append(c)
    c.send_frame(OP_PING, b"are you there")
    await c.wait_for(lambda: (OP_PONG, b"are you there") in c.frames)
    # a request split over three frames, with a ping in between, is one message
    c.send_frame(OP_TEXT, b'{"id":"f","ty', fin=False)
    c.send_frame(OP_PING, b"")
    c.send_frame(OP_CONT, b'pe":"hel', fin=False)
    c.send_frame(OP_CONT, b'lo","version":1}')
    c.send_frame(OP_BINARY, b'{"id":"b","type":"ping"}')
    await c.wait_for(lambda: len([f for f in c.frames if f[0] == OP_TEXT]) >= 2)
    replies = [json.loads(p) for op, p in c.frames if op == OP_TEXT]
    assert [(r["id"], r["type"]) for r in replies] == [("f", "ok"), ("b", "ok")]


async def test_oversize_messages(make_server: ServerFactory, clients: list[WsClient]) -> None:
    server = await make_server(max_frame=4096, max_message=500)
    port = web_port(server)
    a, b = await WsClient.connect(port), await WsClient.connect(port)
    clients += [a, b]
    await a.signup("alice")
    # over the limit: the protocol's error and disconnect, then a normal close
    a.send_frame(OP_TEXT, b'{"id":9,"type":"ping","x":"' + b"y" * 5000 + b'"}')
    bye = await a.event("disconnect")
    assert bye["code"] == "frame_too_large"
    assert a.unmatched[-1]["code"] == "frame_too_large" and a.unmatched[-1]["max_frame"] == 4096
    await a.wait_closed()
    assert a.close_codes == [1000]
    # far over it (more than twice): refused from the frame header, before the payload is
    # read: the server closes with 1009 although only the header and a few bytes were sent
    huge = bytearray(b"\x81\xff") + (10**9).to_bytes(8, "big") + b"\x00\x00\x00\x00" + b"{"
    b.writer.write(bytes(huge))
    await b.wait_closed()
    assert b.close_codes == [1009]
    c = await WsClient.connect(port)
    clients.append(c)
    await c.signup("carol")  # the server goes on


async def test_slow_consumer_is_cut_off_with_a_reason(
    make_server: ServerFactory, clients: list[WsClient]
) -> None:
    server = await make_server(send_queue_max=65536)
    port = web_port(server)
    slow = await WsClient.connect(port, rcvbuf=4096, read=False)
    clients.append(slow)
    for rid, (kind, fields) in enumerate(
        [
            ("hello", {"version": 1}),
            ("signup", {"username": "slow", "password": "password-123"}),
            ("join", {"room": "general"}),
        ]
    ):
        slow.send_frame(OP_TEXT, json.dumps({"id": rid, "type": kind, **fields}).encode())
    sender, fast = await WsClient.connect(port), await WsClient.connect(port)
    clients += [sender, fast]
    await sender.signup("sender")
    await fast.signup("fast")
    await sender.ok("join", room="general")
    await fast.ok("join", room="general")
    text = "z" * 3000
    sent = 0
    while server.endpoint.hub.stats.slow_consumers == 0:
        assert sent < 5000, "the slow reader was never cut off"
        acks = await asyncio.gather(
            *(
                sender.send("send", room="general", text=text, client_id=f"s{i}")
                for i in range(sent, sent + 10)
            )
        )
        assert all(a["type"] == "ok" for a in acks)
        sent += 10
        await fast.wait_for(
            lambda n=sent: sum(e["event"] == "message" for e in fast.events) >= n  # type: ignore[misc]
        )
        sender.events.clear()
    slow.start_reading()
    await slow.wait_closed()
    texts = [json.loads(p) for op, p in slow.frames if op == OP_TEXT]
    assert texts[-1]["event"] == "disconnect" and texts[-1]["code"] == "slow_consumer"
    assert "fast enough" in texts[-1]["reason"]
    seen = [t["seq"] for t in texts if t.get("event") == "message"]
    assert seen == list(range(1, len(seen) + 1))  # in order, nothing skipped before the cut
    await sender.ok("send", room="general", text="after", client_id="after")
    await fast.wait_for(lambda: any(e.get("text") == "after" for e in fast.events))


async def test_the_web_listener_speaks_tls_when_a_certificate_is_configured(
    self_signed_cert: tuple[Path, Path], make_server: ServerFactory, clients: list[WsClient]
) -> None:
    cert, key = self_signed_cert
    server = await make_server(tls_cert=cert, tls_key=key)
    assert server.web is not None and server.web.url.startswith("https://")
    ctx = ssl.create_default_context(cafile=str(cert))
    async with aiohttp.ClientSession() as http, http.get(server.web.url, ssl=ctx) as r:
        assert r.status == 200
        assert r.headers["Strict-Transport-Security"].startswith("max-age=")
    c = await WsClient.connect(web_port(server), ssl_context=ctx)
    clients.append(c)
    await c.signup("alice")
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(WsClient.connect(web_port(server)), TIMEOUT)  # plain: refused


async def test_web_listener_can_be_turned_off(make_server: ServerFactory) -> None:
    server = await make_server(web=False)
    assert server.web is None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)  # the TCP door
    writer.write(b'{"id":1,"type":"hello","version":1}\n')
    assert json.loads(await asyncio.wait_for(reader.readline(), TIMEOUT))["type"] == "ok"
    writer.close()


# ---------------------------------------------------------------------------- HTTP connections


async def test_slow_request_headers_are_cut_off(make_server: ServerFactory) -> None:
    """A slowloris: headers a few bytes at a time, never finished. Before, aiohttp waited
    forever and the connection held a file descriptor the chat door needs too."""
    server = await make_server(login_timeout=1.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", web_port(server))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # closed by the server
    writer.close()
    assert server.web is not None and server.web.guard.timed_out == 1
    # a client that finishes its headers in time is served as before
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{web_port(server)}/") as r,
    ):
        assert r.status == 200


async def test_http_connections_per_address_are_limited(make_server: ServerFactory) -> None:
    server = await make_server(max_connections_per_address=2)
    port = web_port(server)
    assert server.web is not None
    limit = server.web.guard.per_address
    # a few more than the chat's own limit: a WebSocket over it still hears server_full
    assert limit > 2
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(limit)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    refused = await asyncio.wait_for(reader.read(), TIMEOUT)
    assert refused.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in refused
    writer.close()
    other, other_writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=("127.0.0.2", 0)
    )
    other_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(other.read(), TIMEOUT)).startswith(b"HTTP/1.1 200 ")
    other_writer.close()
    first_reader, first = held.pop()
    first.write_eof()  # aiohttp closes its side on EOF: the slot is free once we read that
    assert await asyncio.wait_for(first_reader.read(), TIMEOUT) == b""
    first.close()
    again, again_writer = await asyncio.open_connection("127.0.0.1", port)
    again_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(again.read(), TIMEOUT)).startswith(b"HTTP/1.1 200 ")
    again_writer.close()
    for _, w in held:
        w.close()
