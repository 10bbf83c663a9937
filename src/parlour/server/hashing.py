"""Argon2 off the event loop: a PasswordHasher whose answers are computed ahead in a thread pool.

The core is synchronous and calls ``hasher.hash`` / ``hasher.verify`` while handling
``signup``, ``login`` and ``passwd``. Argon2id takes tens of milliseconds, which would stall
every connection of the loop. So before the core sees such a request, the endpoint awaits
:meth:`PrecomputingHasher.prepare`, which runs the same computations in a thread pool and
remembers the results; the core's calls then find them ready. A call that was not prepared
(e.g. the stored hash changed in between) is simply computed on the spot: correct either way.

Remembered results are keyed by the exact inputs, kept at most ``capacity`` entries and dropped
when used. Passwords live only in memory, as long as the request does. Requests the core is
going to refuse before hashing (``ChatService.password_work``) are not prepared at all.

While a sign-up is being hashed its name is held (``reserve`` / ``release``, wired to
``ChatService.begin_signup`` / ``end_signup``), so a second sign-up for the same name from
another connection is refused as taken at once instead of being hashed too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from parlour.core.ports import PasswordHasher
from parlour.protocol import LoginRequest, PasswdRequest, Request, SignupRequest

__all__ = ["PrecomputingHasher"]

HashLookup = Callable[[str], str | None]


class PrecomputingHasher:
    def __init__(
        self,
        inner: PasswordHasher,
        lookup: HashLookup | None = None,
        *,
        executor: concurrent.futures.Executor | None = None,
        capacity: int = 1024,
    ) -> None:
        self._inner = inner
        self.lookup = lookup
        self._executor = executor
        self._capacity = capacity
        self._hashes: OrderedDict[str, str] = OrderedDict()
        self._verified: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self.precomputed = 0
        self.computed_inline = 0

    # ------------------------------------------------------------------ PasswordHasher port

    def hash(self, password: str) -> str:
        found = self._hashes.pop(password, None)
        if found is not None:
            return found
        self.computed_inline += 1
        return self._inner.hash(password)

    def verify(self, hash: str, password: str) -> bool:
        found = self._verified.pop((hash, password), None)
        if found is not None:
            return found
        self.computed_inline += 1
        return self._inner.verify(hash, password)

    def needs_rehash(self, hash: str) -> bool:
        return self._inner.needs_rehash(hash)

    # ------------------------------------------------------------------ ahead of time

    def prepare(self, conn: int, request: Request) -> Awaitable[None] | None:
        """Start the hashing ``request`` will need; None when it needs none.

        Stored hashes are looked up here, on the loop thread; only Argon2 runs in the pool.
        When ``admit`` says the core will refuse the request before hashing (a taken name,
        a bad password length, no session ...), nothing is computed: the refusal is cheap.
        """
        if self.admit is not None and not self.admit(conn, request):
            return None
        if isinstance(request, SignupRequest):
            reserve, release = self.reserve, self.release
            if reserve is None or release is None:
                return self._run(self._prepare_hash, request.password)
            if not reserve(conn, request.username):
                return None  # another connection is signing this name up: refused unhashed
            return self._signup_hash(request.password, lambda: release(conn, request.username))
        if isinstance(request, LoginRequest):
            stored = self._stored(request.username)
            if stored is None:
                return None
            return self._run(self._prepare_verify, stored, request.password)
        if isinstance(request, PasswdRequest):
            user = self.session_user(conn) if self.session_user is not None else None
            stored = self._stored(user) if user is not None else None
            return self._run(
                self._prepare_passwd, stored, request.old_password, request.new_password
            )
        return None

    #: set by the server: which user a connection is logged in as (for ``passwd``)
    session_user: Callable[[int], str | None] | None = None
    #: set by the server: whether the core could hash for this request at all
    #: (``ChatService.password_work`` with the current time)
    admit: Callable[[int, Request], bool] | None = None

    #: set by the server: hold a name while its sign-up is hashed (``ChatService.begin_signup``);
    #: False when another connection holds it
    reserve: Callable[[int, str], bool] | None = None
    #: set by the server: let go of that name (``ChatService.end_signup``)
    release: Callable[[int, str], None] | None = None

    async def _signup_hash(self, password: str, release: Callable[[], None]) -> None:
        # The name is let go when the hash is ready (or the hashing failed or was cancelled).
        # The endpoint hands the request to the core right after this returns, in the same
        # step of the event loop, so no other sign-up for the name can slip in between.
        try:
            await self._run(self._prepare_hash, password)
        finally:
            release()

    def _stored(self, username: str) -> str | None:
        return self.lookup(username) if self.lookup is not None else None

    def _run(self, fn: Callable[..., None], *args: object) -> Awaitable[None]:
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self._executor, fn, *args)

    # These run in a worker thread: they only compute and store results (single dict
    # operations are atomic under the GIL; the loop thread only pops).

    def _remember(self, table: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        table[key] = value
        while len(table) > self._capacity:
            table.popitem(last=False)

    def _prepare_hash(self, password: str) -> None:
        self._remember(self._hashes, password, self._inner.hash(password))
        self.precomputed += 1

    def _prepare_verify(self, stored: str, password: str) -> None:
        ok = self._inner.verify(stored, password)
        self._remember(self._verified, (stored, password), ok)
        self.precomputed += 1

    def _prepare_passwd(self, stored: str | None, old: str, new: str) -> None:
        if stored is not None:
            self._prepare_verify(stored, old)
        self._prepare_hash(new)
