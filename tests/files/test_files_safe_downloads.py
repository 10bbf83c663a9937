"""Safe downloads over real HTTP: types sniffed from the bytes (never the client's word),
markup never inline, hostile names, zero bytes, Range, thumbnails and a decompression bomb."""

from __future__ import annotations

import io
from urllib.parse import unquote

import aiohttp
import pytest
from files_helpers import User, b64, sha256_of
from PIL import Image

from parlour.server.app import ChatServer

HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
#: a GIF header followed by script: a polyglot that a sniffing browser could run as HTML
OCTET = "application/octet-stream"
POLYGLOT = b"GIF89a/*\x01\x00\x01\x00\x00\x00\x00*/=1;<script>alert(1)</script>"


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


async def _post(u: User, data: bytes, name: str, claimed: str) -> str:
    upload = await u.create(
        len(data), name, **{"Upload-Metadata": f"filename {b64(name)},filetype {b64(claimed)}"}
    )
    if data:
        resp = await u.patch(upload, 0, data)
        assert resp.status == 204
    else:  # zero bytes: complete once created (a PATCH finds it complete)
        resp = await u.patch(upload, 0, b"")
        assert resp.status == 409 and resp.headers["Upload-Offset"] == "0"
    return upload


@pytest.mark.parametrize(
    ("data", "claimed", "sniffed", "served", "inline"),
    [
        (HTML, "image/png", "text/html", "application/octet-stream", False),
        (SVG, "image/svg+xml", "image/svg+xml", "application/octet-stream", False),
        (
            b"<div onclick=x()>hi</div>",
            "text/plain",
            "text/html",
            "application/octet-stream",
            False,
        ),
        (POLYGLOT, "text/html", "image/gif", "image/gif", True),
        (b"", "text/html", "application/octet-stream", "application/octet-stream", False),
        (b"plain words\n", "text/html", "text/plain", "text/plain; charset=utf-8", True),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "text/html", "application/pdf", "application/pdf", True),
        (
            b"\x00\x01\x02binary",
            "image/png",
            "application/octet-stream",
            "application/octet-stream",
            False,
        ),
    ],
    ids=[
        "html",
        "svg-script",
        "html-fragment",
        "gif-polyglot",
        "zero-bytes",
        "text",
        "pdf",
        "binary",
    ],
)
async def test_types_are_sniffed_and_markup_is_never_inline(
    server: ChatServer,
    http: aiohttp.ClientSession,
    data: bytes,
    claimed: str,
    sniffed: str,
    served: str,
    inline: bool,
) -> None:
    alice = await User.make(server, "alice", http)
    await alice.wire.ok("join", room="general")
    upload = await _post(alice, data, "file.html", claimed)
    await alice.wire.ok("send", room="general", text="t", client_id="c", attachment=upload)
    att = (await alice.wire.ok("history", room="general"))["messages"][-1]["attachment"]
    assert att["type"] == sniffed and att["inline"] is inline and att["size"] == len(data)
    got = await alice.get(f"/files/{upload}")
    assert got.status == 200 and await got.read() == data
    assert got.headers["Content-Type"] == served
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert got.headers["Content-Security-Policy"] == "sandbox; default-src 'none'"
    disposition = got.headers["Content-Disposition"]
    assert disposition.startswith("inline;" if inline else "attachment;")
    assert got.headers["ETag"] == f'"{sha256_of(data)}"'
    forced = await alice.get(f"/files/{upload}?download=1")
    assert forced.headers["Content-Disposition"].startswith("attachment;")
    await alice.close()


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\cmd.exe", "cmd.exe"),
        ("evil\u202egnp.exe", "evilgnp.exe"),  # a right-to-left override is dropped
        ("a\x00b\nc\r\td.txt", "abcd.txt"),  # control characters go
        ("日本語のファイル.txt", "日本語のファイル.txt"),
        ('quote"semi;colon.txt', "quote_semi;colon.txt"),
        ("...", "file"),
        ("", "file"),
        ("é" * 300 + ".txt", "é" * 125 + ".txt"),
    ],
)
async def test_hostile_names(
    server: ChatServer, http: aiohttp.ClientSession, given: str, kept: str
) -> None:
    alice = await User.make(server, "alice", http)
    upload = await _post(alice, b"x", given, "text/plain")
    got = await alice.get(f"/files/{upload}")
    disposition = got.headers["Content-Disposition"]
    star = disposition.split("filename*=UTF-8''", 1)[1]
    assert unquote(star) == kept
    assert len(kept.encode()) <= 255
    fallback = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert all(32 <= ord(ch) < 127 for ch in fallback) and '"' not in fallback
    await alice.close()


async def test_ranges(server: ChatServer, http: aiohttp.ClientSession) -> None:
    alice = await User.make(server, "alice", http)
    data = bytes(range(256)) * 40
    upload = await _post(alice, data, "r.bin", "")
    part = await alice.get(f"/files/{upload}", Range="bytes=100-199")
    assert part.status == 206 and await part.read() == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    tail = await alice.get(f"/files/{upload}", Range="bytes=-10")
    assert tail.status == 206 and await tail.read() == data[-10:]
    rest = await alice.get(f"/files/{upload}", Range=f"bytes={len(data) - 5}-")
    assert rest.status == 206 and await rest.read() == data[-5:]
    bad = await alice.get(f"/files/{upload}", Range=f"bytes={len(data)}-")
    assert bad.status == 416 and bad.headers["Content-Range"] == f"bytes */{len(data)}"
    ignored = await alice.get(f"/files/{upload}", Range="bytes=0-1,5-6")
    assert ignored.status == 200 and await ignored.read() == data
    etag = ignored.headers["ETag"]
    same = await alice.get(f"/files/{upload}", **{"If-None-Match": etag})
    assert same.status == 304
    stale = await alice.get(f"/files/{upload}", Range="bytes=0-0", **{"If-Range": '"other"'})
    assert stale.status == 200  # the If-Range does not match: the whole file
    await alice.close()


async def test_thumbnails_and_bombs(server: ChatServer, http: aiohttp.ClientSession) -> None:
    alice = await User.make(server, "alice", http)
    await alice.wire.ok("join", room="general")
    image = png(1000, 500)
    upload = await _post(alice, image, "red.png", "image/png")
    await alice.wire.ok("send", room="general", text="pic", client_id="p", attachment=upload)
    att = (await alice.wire.ok("history", room="general"))["messages"][-1]["attachment"]
    assert att["type"] == "image/png" and att["inline"] and att["thumbnail"]
    thumb = await alice.get(f"/files/{upload}/thumbnail")
    assert thumb.status == 200 and thumb.headers["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(await thumb.read())) as img:
        assert max(img.size) <= 320 and img.size == (320, 160)
    # a decompression bomb: a tiny PNG that claims 20000 x 20000 pixels
    bomb = png(20000, 20000)
    assert len(bomb) < 2_000_000
    bomb_id = await _post(alice, bomb, "bomb.png", "image/png")
    await alice.wire.ok("send", room="general", text="b", client_id="b", attachment=bomb_id)
    att = (await alice.wire.ok("history", room="general"))["messages"][-1]["attachment"]
    assert att["type"] == "image/png" and not att["thumbnail"]
    assert (await alice.get(f"/files/{bomb_id}/thumbnail")).status == 404
    # a broken image: served, no thumbnail
    broken = image[:200]
    broken_id = await _post(alice, broken, "broken.png", "image/png")
    assert (await alice.get(f"/files/{broken_id}/thumbnail")).status == 404
    await alice.close()
