"""asyncio client library for the Parlour chat protocol (docs/client.md).

Example::

    async with Client("127.0.0.1", 7878) as client:
        await client.login("alice", "correct horse")
        await client.join("general")
        await client.send("general", "hello")
        async for event in client.events():
            print(event.name, event.fields)
"""

from parlour.client.attachments import ServerFiles, StateFile, TransferProgress
from parlour.client.backoff import Backoff
from parlour.client.client import (
    DEFAULT_PORT,
    Client,
    ConnectionState,
    StateCallback,
    new_client_id,
)
from parlour.client.cursors import Cursors
from parlour.client.errors import (
    ChecksumMismatch,
    ClientClosed,
    ClientError,
    ConnectionLost,
    FileChanged,
    FilesUnavailable,
    FileTooLarge,
    QuotaExceeded,
    ServerError,
    TooManyUploads,
    TransferFailed,
)
from parlour.client.files import (
    FILE_EVENTS,
    FileResult,
    FileTransfers,
    IncomingOffer,
    Transfer,
    TransferOptions,
    UnknownOffer,
)
from parlour.client.types import (
    Ack,
    Attachment,
    AuditRecord,
    BanInfo,
    FileToken,
    HistoryPage,
    JoinResult,
    KickResult,
    RoomInfo,
    Session,
    Unread,
    UserPresence,
    Welcome,
    attachment_of,
)

__all__ = [
    "DEFAULT_PORT",
    "FILE_EVENTS",
    "Ack",
    "Attachment",
    "AuditRecord",
    "Backoff",
    "BanInfo",
    "ChecksumMismatch",
    "Client",
    "ClientClosed",
    "ClientError",
    "ConnectionLost",
    "ConnectionState",
    "Cursors",
    "FileChanged",
    "FileResult",
    "FileToken",
    "FileTooLarge",
    "FileTransfers",
    "FilesUnavailable",
    "HistoryPage",
    "IncomingOffer",
    "JoinResult",
    "KickResult",
    "QuotaExceeded",
    "RoomInfo",
    "ServerError",
    "ServerFiles",
    "Session",
    "StateCallback",
    "StateFile",
    "TooManyUploads",
    "Transfer",
    "TransferFailed",
    "TransferOptions",
    "TransferProgress",
    "UnknownOffer",
    "Unread",
    "UserPresence",
    "Welcome",
    "attachment_of",
    "new_client_id",
]
