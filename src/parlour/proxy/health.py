"""Sans-I/O backend health: a rise/fall state machine fed by active checks and by what
live traffic shows (passive evidence).

The two kinds of evidence keep separate streaks, as in HAProxy (check counters move on
check results only; errors observed on traffic have a counter of their own):

- **Active checks**: `fall` consecutive failed checks take a backend down, `rise`
  consecutive passed checks bring it back. Live traffic never resets these streaks, so
  a backend whose health page fails goes down even while its other pages answer.
- **Passive**: `fall` consecutive failures seen while serving clients (connect errors and
  timeouts, connections lost before the response, response timeouts) take it down too;
  a good response resets that streak. A passive success never brings a down backend
  back: it gets no traffic to succeed with, only checks do.

One failed check (or one refused connection) never flaps a backend.

A backend added while the proxy runs starts `checking`: it gets no traffic until its first
check, which decides at once (passed: up, failed: down) — an operator's typo in a port
must not cost clients a request each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["HealthState", "HealthTransition"]

Health = Literal["up", "down", "checking"]


@dataclass(frozen=True, slots=True)
class HealthTransition:
    """A change of health: `now` is when it happened, `reason` the last failure (if down)."""

    new: Health
    at: float
    reason: str


class HealthState:
    __slots__ = (
        "check_failures",
        "check_successes",
        "fall",
        "last_reason",
        "passive_failures",
        "rise",
        "state",
    )

    def __init__(self, rise: int = 2, fall: int = 3, initial: Health = "up") -> None:
        self.configure(rise, fall)
        self.state: Health = initial
        self.check_successes = 0  # consecutive passed checks (counts while down)
        self.check_failures = 0  # consecutive failed checks (counts while up)
        # consecutive failures seen on live traffic; the relays test it before calling
        # passive_success, so a plain request costs nothing here
        self.passive_failures = 0
        self.last_reason = ""

    def configure(self, rise: int, fall: int) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.rise = rise
        self.fall = fall

    @property
    def up(self) -> bool:
        return self.state == "up"

    def _go(self, new: Health, now: float, reason: str) -> HealthTransition:
        self.state = new
        self.check_successes = self.check_failures = self.passive_failures = 0
        return HealthTransition(new, now, reason)

    # ----------------------------------------------------------------- active
    def check_passed(self, now: float) -> HealthTransition | None:
        self.check_failures = 0
        if self.state == "up":
            return None
        if self.state == "checking":
            return self._go("up", now, "first health check passed")
        self.check_successes += 1
        if self.check_successes >= self.rise:
            return self._go("up", now, "health check passed")
        return None

    def check_failed(self, now: float, reason: str) -> HealthTransition | None:
        self.check_successes = 0
        self.last_reason = reason
        if self.state == "down":
            return None
        if self.state == "checking":
            return self._go("down", now, reason)
        self.check_failures += 1
        if self.check_failures >= self.fall:
            return self._go("down", now, reason)
        return None

    # ---------------------------------------------------------------- passive
    def passive_success(self) -> None:
        self.passive_failures = 0

    def passive_failure(self, now: float, reason: str) -> HealthTransition | None:
        self.last_reason = reason
        if self.state != "up":  # (down or checking: no traffic goes there)
            return None
        self.passive_failures += 1
        if self.passive_failures >= self.fall:
            return self._go("down", now, reason)
        return None
