"""Sans-I/O backend health: a rise/fall state machine fed by active checks and passive
failures.

A backend goes down after `fall` consecutive failures and comes back after `rise`
consecutive successes, so one failed check (or one refused connection) never flaps it.
Passive failures (connect errors and timeouts seen while serving clients) count the same
as failed checks; a passive success does not bring a down backend back — only active
checks do, because a down backend receives no traffic to succeed with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["HealthState", "HealthTransition"]

Health = Literal["up", "down"]


@dataclass(frozen=True, slots=True)
class HealthTransition:
    """A change of health: `now` is when it happened, `reason` the last failure (if down)."""

    new: Health
    at: float
    reason: str


class HealthState:
    def __init__(self, rise: int = 2, fall: int = 3, initial: Health = "up") -> None:
        self.configure(rise, fall)
        self.state: Health = initial
        self.successes = 0
        self.failures = 0
        self.last_reason = ""

    def configure(self, rise: int, fall: int) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.rise = rise
        self.fall = fall

    @property
    def up(self) -> bool:
        return self.state == "up"

    def success(self, now: float, *, passive: bool = False) -> HealthTransition | None:
        self.failures = 0
        if self.state == "up":
            return None
        if passive:
            return None
        self.successes += 1
        if self.successes >= self.rise:
            self.state = "up"
            self.successes = 0
            return HealthTransition("up", now, "health check passed")
        return None

    def failure(self, now: float, reason: str) -> HealthTransition | None:
        self.successes = 0
        self.last_reason = reason
        if self.state == "down":
            return None
        self.failures += 1
        if self.failures >= self.fall:
            self.state = "down"
            self.failures = 0
            return HealthTransition("down", now, reason)
        return None
