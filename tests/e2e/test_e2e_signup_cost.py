"""A signup, login or passwd the core is going to refuse costs the server no Argon2 work."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from e2e_helpers import ADMIN_PASSWORD, PASSWORD, FakeClock, Wire

from parlour.core.passwords import Argon2Hasher
from parlour.server.app import ChatServer
from parlour.server.config import Settings


class CountingHasher:
    """Cheap Argon2 that counts the work it is asked to do (from any thread)."""

    def __init__(self) -> None:
        self._inner = Argon2Hasher(time_cost=1, memory_cost=8, parallelism=1)
        self._lock = threading.Lock()
        self.calls = 0
        self.threads: set[str] = set()

    def _count(self) -> None:
        with self._lock:
            self.calls += 1
            self.threads.add(threading.current_thread().name)

    def off_loop(self) -> bool:
        """Every call ran in the server's password pool, none on the event loop's thread."""
        return all(name.startswith("parlour-hash") for name in self.threads)

    def hash(self, password: str) -> str:
        self._count()
        return self._inner.hash(password)

    def verify(self, hash: str, password: str) -> bool:
        self._count()
        return self._inner.verify(hash, password)

    def needs_rehash(self, hash: str) -> bool:
        return self._inner.needs_rehash(hash)


@pytest.fixture
async def counted(tmp_path: Path) -> AsyncIterator[tuple[ChatServer, CountingHasher]]:
    hasher = CountingHasher()
    settings = dataclasses.replace(
        Settings(port=0, data_dir=tmp_path / "data", admin_password=ADMIN_PASSWORD)
    )
    server = await ChatServer.start(settings, clock=FakeClock(), password_hasher=hasher)
    yield server, hasher
    await server.stop(grace=2)


async def test_refused_signups_and_passwd_cost_no_hashing(
    counted: tuple[ChatServer, CountingHasher],
) -> None:
    server, hasher = counted
    alice = await Wire.connect(server.port)
    other = await Wire.connect(server.port)
    fresh = await Wire.connect(server.port)
    try:
        await alice.signup("alice", PASSWORD)
        await other.hello()
        before = hasher.calls
        for name, password, code in [
            ("ALICE", PASSWORD, "username_taken"),
            ("admin", PASSWORD, "username_taken"),
            ("not a name!", PASSWORD, "invalid_field"),
            ("bob", "short", "weak_password"),
        ]:
            reply = await other.error("signup", username=name, password=password)
            assert reply["code"] == code
        reply = await alice.error("signup", username="carol", password=PASSWORD)
        assert reply["code"] == "already_authenticated"
        reply = await fresh.error("signup", username="dave", password=PASSWORD)
        assert reply["code"] == "hello_required"
        reply = await alice.error("passwd", old_password=PASSWORD, new_password="short")
        assert reply["code"] == "weak_password"
        reply = await other.error("passwd", old_password=PASSWORD, new_password=PASSWORD + "2")
        assert reply["code"] == "not_authenticated"
        assert hasher.calls == before
        # a login for a name that does not exist is the one refusal that costs Argon2 work on
        # purpose: the same as a wrong password, so that timing cannot tell them apart (a
        # dummy hash is made the first time)
        reply = await other.error("login", username="nobody", password=PASSWORD)
        assert reply["code"] == "bad_credentials"
        first = hasher.calls - before
        assert first in (1, 2)
        reply = await other.error("login", username="nobody2", password=PASSWORD)
        assert reply["code"] == "bad_credentials" and hasher.calls - before - first == 1
        before = hasher.calls
        assert hasher.off_loop()
        # a signup that can succeed is hashed once, off the loop
        await other.ok("signup", username="bob", password=PASSWORD)
        assert hasher.calls == before + 1
        assert hasher.off_loop()
    finally:
        for wire in (alice, other, fresh):
            await wire.close()


class HeldHasher(CountingHasher):
    """Like CountingHasher, but once ``armed`` the first ``hash`` waits for ``gate`` after
    saying it began (not armed while the server starts: it hashes the admin password)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.entered = threading.Event()
        self.gate = threading.Event()

    def hash(self, password: str) -> str:
        if self.armed and not self.entered.is_set():
            self.entered.set()
            if not self.gate.wait(10):
                raise AssertionError("the test never let the first hash finish")
        return super().hash(password)


async def test_second_signup_for_a_name_being_created_fails_fast_without_hashing(
    tmp_path: Path,
) -> None:
    hasher = HeldHasher()
    settings = Settings(port=0, data_dir=tmp_path / "data", admin_password=ADMIN_PASSWORD)
    server = await ChatServer.start(settings, clock=FakeClock(), password_hasher=hasher)
    first = await Wire.connect(server.port)
    second = await Wire.connect(server.port)
    try:
        await first.hello()
        await second.hello()
        before = hasher.calls
        hasher.armed = True
        pending = first.send("signup", username="bob", password=PASSWORD)
        assert await asyncio.to_thread(hasher.entered.wait, 10)  # bob's hash is under way
        # answered while the first hash is still held: no hashing, the taken-name answer
        err = await second.error("signup", username="BOB", password=PASSWORD + "2")
        assert (err["code"], err["message"]) == ("username_taken", "the name 'BOB' is taken")
        assert not pending.done()
        hasher.gate.set()
        assert (await asyncio.wait_for(pending, 10))["type"] == "ok"
        assert hasher.calls == before + 1 and hasher.off_loop()
        # the name is taken for good now; a free name is hashed as usual
        err = await second.error("signup", username="bob", password=PASSWORD)
        assert err["code"] == "username_taken"
        await second.ok("signup", username="carol", password=PASSWORD)
        assert hasher.calls == before + 2 and hasher.off_loop()
    finally:
        hasher.gate.set()
        for wire in (first, second):
            await wire.close()
        await server.stop(grace=2)
