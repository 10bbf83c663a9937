"""Who may download a file, over real HTTP (docs/design/files.md, 4): room members (not
banned), the two DM participants, the uploader before it is attached; anyone else 403;
no such file (or a deleted message's) 404; no or a bad token 401."""

from __future__ import annotations

import aiohttp
from files_helpers import User, upload_bytes

from parlour.server.app import ChatServer


async def test_authorisation_matrix(server: ChatServer, http: aiohttp.ClientSession) -> None:
    admin = await User.make(server, "admin", http)
    alice = await User.make(server, "alice", http)
    member = await User.make(server, "member", http)
    outsider = await User.make(server, "outsider", http)
    leaver = await User.make(server, "leaver", http)
    kicked = await User.make(server, "kicked", http)
    banned = await User.make(server, "banned", http)
    third = await User.make(server, "third", http)
    await admin.wire.ok("room_create", room="team")
    for u in (alice, member, leaver, kicked, banned):
        await u.wire.ok("join", room="team")
    room_file = await upload_bytes(alice, b"room bytes", "r.txt")
    dm_file = await upload_bytes(alice, b"dm bytes", "d.txt")
    await alice.wire.ok("send", room="team", text="see", client_id="a1", attachment=room_file)
    sent = await alice.wire.ok("dm", to="member", text="", client_id="a2", attachment=dm_file)

    async def status(u: User, fid: str) -> int:
        return (await u.get(f"/files/{fid}")).status

    # everyone in the room may, before anything changes
    for u in (alice, member, leaver, kicked, banned):
        assert await status(u, room_file) == 200, u.name
    assert await status(outsider, room_file) == 403
    await leaver.wire.ok("leave", room="team")
    await admin.wire.ok("kick", user="kicked", room="team", reason="x")
    await admin.wire.ok("ban", user="banned", reason="spam")
    assert await status(leaver, room_file) == 403
    assert await status(kicked, room_file) == 403
    assert await status(banned, room_file) == 403
    assert await status(member, room_file) == 200
    # a DM: its two participants only
    assert await status(alice, dm_file) == 200
    assert await status(member, dm_file) == 200
    assert await status(third, dm_file) == 403
    assert await status(admin, dm_file) == 403  # admins are no exception
    # no token, a bad token, a token in the query (links a browser opens)
    resp = await http.get(alice.base + f"/files/{room_file}")
    assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await http.get(
        alice.base + f"/files/{room_file}", headers={"Authorization": "Bearer nope"}
    )
    assert resp.status == 401
    resp = await http.get(alice.base + f"/files/{room_file}?access_token={member.token}")
    assert resp.status == 200 and await resp.read() == b"room bytes"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Cache-Control"].startswith("private")
    # no such file, a malformed id
    assert await status(alice, "A" * 22) == 404
    assert await status(alice, "..%2F..%2Fetc") == 404
    # deleting the message removes access, for everyone (its uploader too)
    await alice.wire.ok("delete", peer="member", seq=sent["seq"])
    assert await status(member, dm_file) == 404
    assert await status(alice, dm_file) == 404
    history = await member.wire.ok("history", peer="alice")
    assert history["messages"][-1]["deleted"] and history["messages"][-1]["attachment"] is None
    # an expired token: 401 (the client asks for a new one)
    assert server.files is not None
    assert server.service.file_user(alice.token, server.files.clock() + 3600) is None
    for u in (admin, alice, member, outsider, leaver, kicked, banned, third):
        await u.close()
