"""Direct-message conversations: one per unordered user pair, with its own sequence."""

from __future__ import annotations

from parlour.core.messages import MessageLog

__all__ = ["Conversation"]


class Conversation:
    """The conversation `conv` between user keys `a` and `b` (a < b). `uid` scopes client ids."""

    __slots__ = ("a", "b", "conv", "log", "uid")

    def __init__(self, uid: int, conv: str, a: str, b: str, log: MessageLog) -> None:
        self.uid = uid
        self.conv = conv
        self.a = a
        self.b = b
        self.log = log

    def other(self, user: str) -> str:
        return self.b if user == self.a else self.a
