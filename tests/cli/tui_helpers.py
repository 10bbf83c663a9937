"""Helpers for driving the full-screen client headless (Textual's pilot) against a real chat
server (ChatTestServer: the real core and TCP door on 127.0.0.1). Every wait is on a real
condition (the model, the screen, or what the server stored), never a sleep."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from textual.pilot import Pilot

from parlour.cli.chat import ChatApp
from parlour.cli.tui.app import ChatTui
from parlour.client import Client, TransferOptions
from parlour.server.testing import ChatTestServer

PASSWORD = "password-123"
SIZE = (110, 30)


@asynccontextmanager
async def user(
    srv: ChatTestServer, name: str, *rooms: str, transfers: TransferOptions | None = None
) -> AsyncIterator[Client]:
    async with Client("127.0.0.1", srv.port, transfers=transfers) as client:
        await client.login(name, PASSWORD)
        for room in rooms:
            await client.join(room)
        yield client


@asynccontextmanager
async def tui(
    srv: ChatTestServer,
    name: str = "alice",
    size: tuple[int, int] = SIZE,
    *,
    transfers: TransferOptions | None = None,
    client_options: dict[str, Any] | None = None,
    **options: object,
) -> AsyncIterator[tuple[ChatTui, Pilot[int]]]:
    holder: list[ChatApp] = []
    client = Client(
        "127.0.0.1",
        srv.port,
        on_state=lambda state, detail: holder[0].on_state(state, detail) if holder else None,
        transfers=transfers,
        **(client_options or {}),
    )
    await client.connect()
    try:
        session = await client.login(name, PASSWORD)
        runner = ChatApp(client, interactive=True, out=print, err=print)
        holder.append(runner)
        app = ChatTui(client, session, runner, **options)  # type: ignore[arg-type]
        runner.tui_sink = app.on_connection_state
        async with app.run_test(size=size, notifications=True) as pilot:
            await until(pilot, app.loaded.is_set)
            yield app, pilot
    finally:
        await client.close()


async def until(pilot: Pilot[int], condition: Callable[[], bool], timeout: float = 20) -> None:
    """Let the app work until ``condition()`` holds (checked after each round of messages)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await pilot.pause()
            await asyncio.sleep(0.002)


def screen(app: ChatTui) -> list[str]:
    """The text of the message area as drawn now."""
    return [strip.text for strip in app.log_view.lines()]


def shows(app: ChatTui, needle: str) -> bool:
    return any(needle in line for line in screen(app))


async def type_text(pilot: Pilot[int], text: str) -> None:
    await pilot.press(*[("space" if ch == " " else ch) for ch in text])
