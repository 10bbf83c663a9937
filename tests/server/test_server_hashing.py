"""PrecomputingHasher: a sign-up for a name whose sign-up is already being hashed is not hashed
again, and the name is let go however the hashing ends."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Iterator

import pytest

from parlour.protocol import SignupRequest
from parlour.server.hashing import PrecomputingHasher

TIMEOUT = 10.0


class GatedHasher:
    """Plain "hashes"; ``hash`` reports that it started and waits for ``gate`` (or fails)."""

    def __init__(self, fail: bool = False) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.fail = fail
        self.calls: list[str] = []

    def hash(self, password: str) -> str:
        self.calls.append(password)
        self.entered.set()
        if not self.gate.wait(TIMEOUT):
            raise AssertionError("the test never opened the gate")
        if self.fail:
            raise RuntimeError("hashing failed")
        return "plain$" + password

    def verify(self, hash: str, password: str) -> bool:
        return hash == "plain$" + password

    def needs_rehash(self, hash: str) -> bool:
        return False


class Holds:
    """Stand-in for ChatService.begin_signup / end_signup."""

    def __init__(self) -> None:
        self.held: dict[str, int] = {}

    def reserve(self, conn: int, name: str) -> bool:
        return self.held.setdefault(name.casefold(), conn) == conn

    def release(self, conn: int, name: str) -> None:
        if self.held.get(name.casefold()) == conn:
            del self.held[name.casefold()]


@pytest.fixture
def executor() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    yield pool
    pool.shutdown(wait=True)


def _sign_up_bob(
    inner: GatedHasher, executor: concurrent.futures.Executor
) -> tuple[PrecomputingHasher, Holds, Awaitable[None]]:
    """A PrecomputingHasher over `inner`, the names it holds, and what connection 1's sign-up
    of bob (password "first-pw") waits on: its hashing has been handed to `executor`."""
    holds = Holds()
    hasher = PrecomputingHasher(inner, executor=executor)
    hasher.reserve = holds.reserve
    hasher.release = holds.release
    waiting = hasher.prepare(1, SignupRequest(id=1, username="bob", password="first-pw"))
    assert waiting is not None
    return hasher, holds, waiting


async def test_second_signup_for_a_name_being_hashed_is_not_prepared(
    executor: concurrent.futures.ThreadPoolExecutor,
) -> None:
    inner = GatedHasher()
    hasher, holds, waiting = _sign_up_bob(inner, executor)
    first = asyncio.ensure_future(waiting)
    try:
        assert await asyncio.to_thread(inner.entered.wait, TIMEOUT)
        assert holds.held == {"bob": 1}
        assert hasher.prepare(2, SignupRequest(id=1, username="BOB", password="second")) is None
    finally:
        inner.gate.set()
    await asyncio.wait_for(first, TIMEOUT)
    assert holds.held == {}  # let go once the hash is ready
    assert inner.calls == ["first-pw"]
    assert hasher.hash("first-pw") == "plain$first-pw" and hasher.computed_inline == 0


async def test_the_name_is_let_go_when_hashing_fails(
    executor: concurrent.futures.ThreadPoolExecutor,
) -> None:
    inner = GatedHasher(fail=True)
    inner.gate.set()
    _, holds, waiting = _sign_up_bob(inner, executor)
    with pytest.raises(RuntimeError, match="hashing failed"):
        await asyncio.wait_for(waiting, TIMEOUT)
    assert holds.held == {}


async def test_the_name_is_let_go_when_the_wait_is_cancelled(
    executor: concurrent.futures.ThreadPoolExecutor,
) -> None:
    inner = GatedHasher()
    _, holds, waiting = _sign_up_bob(inner, executor)
    task = asyncio.ensure_future(waiting)
    try:
        assert await asyncio.to_thread(inner.entered.wait, TIMEOUT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert holds.held == {}
    finally:
        inner.gate.set()
