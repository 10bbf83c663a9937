"""The minimal path over real sockets: file_token, tus create/PATCH/HEAD, attachment on
send and dm, the record carries it, GET /files/<id> for members only."""

from __future__ import annotations

import aiohttp
from files_helpers import User, sha256_of, upload_bytes

from parlour.server.app import ChatServer


async def test_upload_attach_download(server: ChatServer, http: aiohttp.ClientSession) -> None:
    alice = await User.make(server, "alice", http)
    bob = await User.make(server, "bob", http)
    carol = await User.make(server, "carol", http)
    for u in (alice, bob):
        await u.wire.ok("join", room="general")
    data = b"hello, files\n" * 1000
    upload = await upload_bytes(alice, data, "notes.txt")
    head = await alice.tus("HEAD", f"/files/uploads/{upload}")
    assert head.status == 200 and head.headers["Upload-Offset"] == str(len(data))
    # before it is attached only its uploader sees it
    assert (await alice.get(f"/files/{upload}")).status == 200
    assert (await bob.get(f"/files/{upload}")).status == 404
    sent = await alice.wire.ok("send", room="general", text="", client_id="f1", attachment=upload)
    event = await bob.wire.event("message", seq=sent["seq"])
    att = event["attachment"]
    assert att["id"] == upload and att["name"] == "notes.txt" and att["size"] == len(data)
    assert att["sha256"] == sha256_of(data) and att["type"] == "text/plain" and att["inline"]
    got = await bob.get(f"/files/{upload}")
    assert got.status == 200 and await got.read() == data
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert got.headers["Content-Security-Policy"].startswith("sandbox")
    assert (await carol.get(f"/files/{upload}")).status == 403
    history = await bob.wire.ok("history", room="general")
    assert history["messages"][-1]["attachment"]["id"] == upload
    # a second use of the same upload is refused
    again = await alice.wire.error("dm", to="bob", text="x", client_id="f2", attachment=upload)
    assert again["code"] == "file_in_use"
    # a DM attachment: the two participants only
    second = await upload_bytes(alice, b"secret", "s.bin")
    await alice.wire.ok("dm", to="bob", text="for you", client_id="f3", attachment=second)
    assert (await bob.get(f"/files/{second}")).status == 200
    assert (await carol.get(f"/files/{second}")).status == 403
    for u in (alice, bob, carol):
        await u.close()


async def test_offline_delivery_and_resume_carry_the_attachment(
    server: ChatServer, http: aiohttp.ClientSession
) -> None:
    alice = await User.make(server, "alice", http)
    bob = await User.make(server, "bob", http)
    await bob.wire.ok("join", room="general")
    await alice.wire.ok("join", room="general")
    await bob.close()  # bob goes offline
    dm_file = await upload_bytes(alice, b"while you were away", "away.txt")
    room_file = await upload_bytes(alice, b"in the room", "room.txt")
    await alice.wire.ok("dm", to="bob", text="", client_id="o1", attachment=dm_file)
    sent = await alice.wire.ok(
        "send", room="general", text="r", client_id="o2", attachment=room_file
    )
    # bob comes back: the offline DM arrives with its attachment, and a resume of the room
    # brings the message with it too
    back = await User.make(server, "bob", http, signup=False)
    dm = await back.wire.event("dm", peer="alice")
    assert dm["attachment"]["id"] == dm_file and dm["attachment"]["name"] == "away.txt"
    synced = await back.wire.ok("sync", resume={"rooms": {"general": sent["seq"] - 1}, "dms": {}})
    assert synced is not None
    msg = await back.wire.event("message", seq=sent["seq"])
    assert msg["attachment"]["id"] == room_file
    assert (await back.get(f"/files/{dm_file}")).status == 200
    await alice.close()
    await back.close()
