"""asyncio client library for the Parlour chat protocol (docs/client.md).

Example::

    async with Client("127.0.0.1", 7878) as client:
        await client.login("alice", "correct horse")
        await client.join("general")
        await client.send("general", "hello")
        async for event in client.events():
            print(event.name, event.fields)
"""

from parlour.client.backoff import Backoff
from parlour.client.client import (
    DEFAULT_PORT,
    Client,
    ConnectionState,
    StateCallback,
    new_client_id,
)
from parlour.client.cursors import Cursors
from parlour.client.errors import ClientClosed, ClientError, ConnectionLost, ServerError
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
    AuditRecord,
    BanInfo,
    HistoryPage,
    JoinResult,
    KickResult,
    RoomInfo,
    Session,
    Unread,
    UserPresence,
    Welcome,
)

__all__ = [
    "DEFAULT_PORT",
    "FILE_EVENTS",
    "Ack",
    "AuditRecord",
    "Backoff",
    "BanInfo",
    "Client",
    "ClientClosed",
    "ClientError",
    "ConnectionLost",
    "ConnectionState",
    "Cursors",
    "FileResult",
    "FileTransfers",
    "HistoryPage",
    "IncomingOffer",
    "JoinResult",
    "KickResult",
    "RoomInfo",
    "ServerError",
    "Session",
    "StateCallback",
    "Transfer",
    "TransferOptions",
    "UnknownOffer",
    "Unread",
    "UserPresence",
    "Welcome",
    "new_client_id",
]
