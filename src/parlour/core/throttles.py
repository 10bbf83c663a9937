"""Login throttling that an attacker cannot turn against a victim (sans-I/O, time passed in).

Failed password checks (a login, or a password change with a wrong old password) are counted
three ways, and a login is refused while any of them applies:

* **per account and address** — `threshold` consecutive failures for one user name from one
  address lock that pair for `seconds` (the documented "3 wrong passwords: wait a minute").
  Someone guessing from elsewhere cannot lock the owner out: only their own pair is locked.
* **per address** — `address_threshold` failures from one address within `address_window`
  seconds, for any names (known or not), lock that address out of every login for `seconds`,
  doubling with each new lock (at most an hour). Spraying names from one address, or evicting
  a victim's counter by guessing thousands of unknown names, stops there.
* **per account** — `account_threshold` failures for one account within `account_window`
  seconds, from any addresses, put it under attack: from then on, until the window passes, an
  address that has failed on this account is locked out of it for `seconds` after each
  failure. An address that never failed on it — the owner's — is not affected.

Every table is bounded (`capacity` entries, the least recently touched dropped first), and a
user name that does not exist is counted exactly like one that does, so the answers have the
same shape either way.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = ["LoginThrottle"]


@dataclass(slots=True)
class _Pair:
    failures: int = 0
    locked_until: float = 0.0


@dataclass(slots=True)
class _Address:
    failures: int = 0
    since: float = 0.0
    locked_until: float = 0.0
    strikes: int = 0


@dataclass(slots=True)
class _Account:
    failures: int = 0
    since: float = 0.0
    attacked_until: float = 0.0
    #: addresses that failed on this account -> until when they are locked out of it
    failed: OrderedDict[str, float] = field(default_factory=OrderedDict)


#: addresses remembered per account under attack
_FAILED_PER_ACCOUNT = 1024


class LoginThrottle:
    __slots__ = (
        "_accounts",
        "_addresses",
        "_capacity",
        "_pairs",
        "account_threshold",
        "account_window",
        "address_threshold",
        "address_window",
        "seconds",
        "threshold",
    )

    def __init__(
        self,
        threshold: int,
        seconds: float,
        *,
        address_threshold: int = 20,
        address_window: float = 600.0,
        account_threshold: int = 50,
        account_window: float = 3600.0,
        capacity: int = 10_000,
    ) -> None:
        self.threshold = max(1, threshold)
        self.seconds = seconds
        self.address_threshold = max(1, address_threshold)
        self.address_window = address_window
        self.account_threshold = max(1, account_threshold)
        self.account_window = account_window
        self._capacity = max(1, capacity)
        self._pairs: OrderedDict[tuple[str, str], _Pair] = OrderedDict()
        self._addresses: OrderedDict[str, _Address] = OrderedDict()
        self._accounts: OrderedDict[str, _Account] = OrderedDict()

    # ------------------------------------------------------------------ queries

    def locked_for(self, user: str, address: str, now: float) -> float:
        """Seconds until `address` may try a password for user key `user` (0.0: now)."""
        until = 0.0
        pair = self._pairs.get((user, address))
        if pair is not None:
            until = max(until, pair.locked_until)
        addr = self._addresses.get(address)
        if addr is not None:
            until = max(until, addr.locked_until)
        account = self._accounts.get(user)
        if account is not None and account.attacked_until > now:
            until = max(until, account.failed.get(address, 0.0))
        return max(0.0, until - now)

    def __len__(self) -> int:
        return len(self._pairs) + len(self._addresses) + len(self._accounts)

    # ------------------------------------------------------------------ updates

    def failure(self, user: str, address: str, now: float) -> float:
        """Count a failed password check; returns how long the pair is now locked out (0.0
        when this failure did not lock it)."""
        self._pair_failure(user, address, now)
        self._address_failure(address, now)
        self._account_failure(user, address, now)
        return self.locked_for(user, address, now)

    def success(self, user: str, address: str) -> None:
        """A correct password: the pair's consecutive failures start again from zero (the
        address's and the account's counts are left to their windows)."""
        self._pairs.pop((user, address), None)

    def expire(self, now: float) -> None:
        """Forget what no longer matters (called about once a second)."""
        for pair in [k for k, p in self._pairs.items() if p.locked_until and p.locked_until <= now]:
            del self._pairs[pair]
        for address in [
            k
            for k, a in self._addresses.items()
            if a.locked_until <= now and now - a.since > self.address_window and not a.strikes
        ]:
            del self._addresses[address]
        for user in [
            k
            for k, a in self._accounts.items()
            if a.attacked_until <= now and now - a.since > self.account_window
        ]:
            del self._accounts[user]

    # ------------------------------------------------------------------ the three counts

    def _bound(self, table: OrderedDict[object, object]) -> None:
        while len(table) > self._capacity:
            table.popitem(last=False)

    def _pair_failure(self, user: str, address: str, now: float) -> None:
        key = (user, address)
        pair = self._pairs.get(key)
        if pair is None:
            pair = self._pairs[key] = _Pair()
            self._bound(self._pairs)  # type: ignore[arg-type]
        else:
            self._pairs.move_to_end(key)
            if pair.locked_until and pair.locked_until <= now:
                pair.locked_until = 0.0
        pair.failures += 1
        if pair.failures >= self.threshold:
            pair.failures = 0
            pair.locked_until = now + self.seconds

    def _address_failure(self, address: str, now: float) -> None:
        addr = self._addresses.get(address)
        if addr is None:
            addr = self._addresses[address] = _Address(since=now)
            self._bound(self._addresses)  # type: ignore[arg-type]
        else:
            self._addresses.move_to_end(address)
        if now - addr.since > self.address_window:
            addr.failures, addr.since = 0, now
            if addr.locked_until <= now:
                addr.strikes = max(0, addr.strikes - 1)
        addr.failures += 1
        if addr.failures >= self.address_threshold:
            addr.failures, addr.since = 0, now
            lock = min(3600.0, self.seconds * (2**addr.strikes))
            addr.strikes += 1
            addr.locked_until = now + lock

    def _account_failure(self, user: str, address: str, now: float) -> None:
        account = self._accounts.get(user)
        if account is None:
            account = self._accounts[user] = _Account(since=now)
            self._bound(self._accounts)  # type: ignore[arg-type]
        else:
            self._accounts.move_to_end(user)
        if now - account.since > self.account_window:
            account.failures, account.since = 0, now
        account.failures += 1
        if account.failures >= self.account_threshold:
            account.attacked_until = now + self.account_window
        failed = account.failed
        failed[address] = now + self.seconds
        failed.move_to_end(address)
        while len(failed) > _FAILED_PER_ACCOUNT:
            failed.popitem(last=False)
