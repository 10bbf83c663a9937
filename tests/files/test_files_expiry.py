"""Abandoned uploads expire; the same bytes are stored once; a blob goes when nothing refers to
its content any more."""

from __future__ import annotations

import aiohttp
from files_helpers import User, sha256_of, upload_bytes

from parlour.server.app import ChatServer


async def test_sweep_and_deduplication(server: ChatServer, http: aiohttp.ClientSession) -> None:
    files = server.files
    assert files is not None
    alice = await User.make(server, "alice", http)
    await alice.wire.ok("join", room="general")
    same = b"the same bytes twice"
    first = await upload_bytes(alice, same, "one.txt")
    second = await upload_bytes(alice, same, "two.txt")
    blob = files.blobs.path(sha256_of(same))
    assert blob.is_file() and len(list(files.blobs.blobs.rglob("*"))) == 3  # ab/, ab/cd/, blob
    abandoned = await alice.create(100)
    assert (await alice.patch(abandoned, 0, b"x" * 10)).status == 204
    kept = await upload_bytes(alice, b"attached", "kept.txt")
    await alice.wire.ok("send", room="general", text="k", client_id="k", attachment=kept)
    sent = await alice.wire.ok("send", room="general", text="s", client_id="s", attachment=first)
    # nothing is old yet; a deleted message's file goes at once, its blob stays (still used)
    await alice.wire.ok("delete", room="general", seq=sent["seq"])
    assert await files.sweep() == 1
    assert (await alice.get(f"/files/{first}")).status == 404
    assert blob.is_file() and (await alice.get(f"/files/{second}")).status == 200
    # a day later: the abandoned upload and the finished one nobody used go, with the blob
    later = files.clock() + files.limits.expiry + 1
    assert await files.sweep(now=later) == 2
    assert (await alice.tus("HEAD", f"/files/uploads/{abandoned}")).status == 404
    assert not files.partials.data(abandoned).exists()
    assert (await alice.get(f"/files/{second}")).status == 404
    assert not blob.exists()
    # the attached one stays
    assert (await alice.get(f"/files/{kept}")).status == 200
    assert await files.sweep(now=later) == 0
    await alice.close()
