"""Helpers of the file-transfer tests over the client library (one node or several): wait
for a client's next event of a kind, and for a transfer's end."""

from __future__ import annotations

import asyncio

from parlour.client import Client, FileResult, Transfer
from parlour.protocol import Event, EventName

__all__ = ["TIMEOUT", "finished", "next_event"]

TIMEOUT = 30


async def next_event(client: Client, name: EventName, offer: str | None = None) -> Event:
    """The client's next `name` event (for `offer`, when given)."""

    async def find() -> Event:
        async for event in client.events():
            if event.name is name and (offer is None or event.get("offer") == offer):
                return event
        raise AssertionError(f"events ended before {name}")

    return await asyncio.wait_for(find(), TIMEOUT)


async def finished(transfer: Transfer) -> FileResult:
    return await asyncio.wait_for(transfer.wait(), TIMEOUT)
