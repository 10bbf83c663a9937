"""Files in chat (docs/design/files.md): `file_token`, and the attachment of a finished
upload to a room message or a DM.

The bytes never pass through the core: uploads and downloads are HTTP on the web listener
(`parlour.files.http`). The core hands out the bearer token that authorises them, checks the
limits early (size, quota, unfinished uploads: what the store says the user holds, a need),
and turns an upload into a message's attachment.
"""

from __future__ import annotations

from parlour.core.context import Ctx, fail
from parlour.core.needs import ReadFile, ReadFileUsage
from parlour.core.outcome import Outcome
from parlour.core.records import FileRecord, FileUsage, conv_members, user_key
from parlour.core.sessions import Connection
from parlour.core.state import ChatState, UserState
from parlour.protocol import AttachmentRow, ErrorCode, FileTokenReply, FileTokenRequest, Ok

__all__ = [
    "ATTACHED_MEMORY",
    "DOWNLOAD_URL",
    "attachment_for",
    "file_access",
    "file_token",
    "mark_attached",
]

#: the downloads' path prefix on the web listener (`/files/<id>`)
DOWNLOAD_URL = "/files/"
#: file ids this node attached lately, remembered until the store surely knows
ATTACHED_MEMORY = 10_000


def file_token(cx: Ctx, c: Connection, rq: FileTokenRequest) -> Outcome:
    u = cx.user(c)
    cfg = cx.cfg
    if cfg.upload_url is None:
        raise fail(ErrorCode.UNAVAILABLE, "this server takes no uploads (it has no web listener)")
    if rq.size is not None and rq.size > cfg.max_file_size:
        raise fail(
            ErrorCode.FILE_TOO_LARGE,
            f"the file is larger than this server takes ({cfg.max_file_size} bytes)",
            max_file_size=cfg.max_file_size,
        )
    usage: FileUsage = cx.need(ReadFileUsage(u.name))
    if rq.size is not None:
        if usage.bytes + rq.size > cfg.user_quota:
            raise fail(
                ErrorCode.QUOTA_EXCEEDED,
                f"the file would take you over your quota ({usage.bytes} of "
                f"{cfg.user_quota} bytes used)",
                user_quota=cfg.user_quota,
                quota_used=usage.bytes,
            )
        if usage.unfinished >= cfg.max_concurrent_uploads:
            raise fail(
                ErrorCode.TOO_MANY_UPLOADS,
                f"you already have {usage.unfinished} unfinished uploads (at most "
                f"{cfg.max_concurrent_uploads}); finish or cancel one first",
                max_concurrent_uploads=cfg.max_concurrent_uploads,
            )
    cx.rate(c)
    token, expires = cx.file_tokens.issue(u.key, cx.now)
    return Outcome(
        Ok(
            rq.id,
            FileTokenReply(
                token=token,
                expires=expires,
                upload_url=cfg.upload_url,
                download_url=DOWNLOAD_URL,
                max_file_size=cfg.max_file_size,
                user_quota=cfg.user_quota,
                quota_used=usage.bytes,
            ),
        )
    )


def attachment_for(
    cx: Ctx,
    u: UserState,
    file_id: str,
    *,
    client_id: str | None = None,
    where: tuple[str | None, str | None] = (None, None),
) -> AttachmentRow:
    """The attachment record of `u`'s finished upload `file_id` (may need the store: call it
    before changing any state). `client_id` and `where` (room key, conversation id) are
    those of the message being sent: with several nodes, a file already attached to the
    message with that client id there is a resend of it (after a failover to another node,
    which has not heard of the client id): it goes on, and the store's unique key on client
    ids answers it as a duplicate."""
    rec: FileRecord | None = cx.need(ReadFile(file_id))
    if rec is None or not rec.complete or user_key(rec.owner) != u.key:
        raise fail(ErrorCode.UNKNOWN_FILE, f"no finished upload {file_id} of yours", file=file_id)
    here = cx.attached.get(file_id)
    resend = client_id is not None and (
        # attached here to this very message, which the store may not have taken (a commit
        # that failed: the client is told `unavailable` and sends it again)
        here == (client_id, *where)
        or (
            cx.cfg.cluster
            and rec.attached
            and rec.client_id == client_id
            and (rec.room_key, rec.conv) == where
        )
    )
    if not resend and (rec.attached or here is not None):
        raise fail(
            ErrorCode.FILE_IN_USE,
            f"file {file_id} is attached to a message already (upload it again to post it again)",
            file=file_id,
        )
    assert rec.sha256 is not None and rec.type is not None
    return {
        "id": rec.id,
        "name": rec.name,
        "size": rec.length,
        "type": rec.type,
        "sha256": rec.sha256,
        "inline": rec.inline,
        "thumbnail": rec.thumbnail,
    }


def mark_attached(
    cx: Ctx,
    file_id: str,
    client_id: str | None,
    where: tuple[str | None, str | None],
) -> None:
    """Remember that this node attached `file_id` to the message with `client_id` at `where`
    (room key, conversation id), until the store surely knows."""
    attached = cx.attached
    attached[file_id] = (client_id, *where)
    attached.move_to_end(file_id)
    while len(attached) > ATTACHED_MEMORY:
        attached.popitem(last=False)


def file_access(state: ChatState, user: str, rec: FileRecord | None, now: float) -> int:
    """May user key `user` download `rec`: 200, 403 (not allowed) or 404 (no such file)."""
    if rec is None or not rec.complete or rec.deleted:
        return 404
    if state.bans.active(user, now) is not None:
        return 403
    if not rec.attached:  # only its uploader knows of it yet
        return 200 if user_key(rec.owner) == user else 404
    if rec.conv is not None:
        return 200 if user in conv_members(rec.conv) else 403
    room = state.rooms.get(rec.room_key or "")
    if room is None:
        return 404
    return 200 if user in room.members else 403
