"""`CoreConfig`: every knob of the chat domain, with its default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from parlour import __version__

__all__ = ["CoreConfig", "DuplicateLoginPolicy"]

DuplicateLoginPolicy = Literal["reject", "allow"]


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Settings of the chat core. Times are in seconds."""

    #: minimum password length at sign-up and password change
    password_min_length: int = 8
    #: consecutive failed logins that lock a user name, and for how long
    lockout_threshold: int = 3
    lockout_seconds: float = 60.0
    #: `reject`: a second login is refused while a session is live; `allow`: several sessions
    duplicate_login: DuplicateLoginPolicy = "reject"
    #: name of the administrator account created on first start
    admin_name: str = "admin"
    #: rooms created on first start
    default_rooms: tuple[str, ...] = ("general", "random", "help")
    #: messages returned by `join`
    join_history: int = 50
    #: largest page of `history` / `since` / `audit` results
    max_page: int = 500
    #: newest messages per room (and per active conversation) kept in memory
    recent_window: int = 256
    #: (sender, client id) pairs remembered for idempotent resends, beyond the recent window
    client_id_memory: int = 100_000
    #: longest accepted message text, in characters
    max_message_length: int = 4000
    #: token bucket per connection for message-producing requests (send, dm, edit, delete,
    #: broadcast): sustained rate per second and bucket capacity (burst)
    rate_per_second: float = 20.0
    rate_burst: float = 10.0
    #: window of `who {"recent": true}` in seconds (users logged in or active within the last
    #: hour); `who {"since": seconds}` asks for another window
    presence_window: float = 3600.0
    #: longest kick/ban reason and broadcast text are bounded by max_message_length too
    max_reason_length: int = 200
    #: failed-login records kept for lockout accounting (oldest evicted first)
    max_tracked_failures: int = 10_000
    #: most messages / approximate bytes one login or sync pushes (offline DMs + resume);
    #: beyond it the reply says `truncated` and the client syncs again from what it got.
    #: Keep catch_up_bytes well under the transport's per-connection send queue.
    catch_up_messages: int = 2000
    catch_up_bytes: int = 512 * 1024
    #: most member names a `join` reply lists (online members first); `members_total` and
    #: `online_total` give the full counts, `who {"room"}` lists the online ones
    join_members: int = 100
    #: `presence` events go to co-members of the user's rooms with at most this many live
    #: connections (bigger rooms use `who` instead: keeps logins O(1) in huge rooms)
    presence_room_limit: int = 1000
    #: audit entries kept in memory (the newest; `audit` reads at most this many)
    audit_memory: int = 1000
    #: announced in the `hello` reply (the frame limit is enforced by the transport's codec)
    server_name: str = f"parlour/{__version__}"
    heartbeat_s: float = 30.0
    max_frame: int = 65536

    def __post_init__(self) -> None:
        if self.password_min_length < 1:
            raise ValueError("password_min_length must be at least 1")
        if self.lockout_threshold < 1:
            raise ValueError("lockout_threshold must be at least 1")
        if self.lockout_seconds < 0:
            raise ValueError("lockout_seconds must not be negative")
        if self.duplicate_login not in ("reject", "allow"):
            raise ValueError("duplicate_login must be 'reject' or 'allow'")
        if self.rate_per_second <= 0 or self.rate_burst < 1:
            raise ValueError("rate_per_second must be > 0 and rate_burst >= 1")
        if self.join_history < 0 or self.max_page < 1 or self.recent_window < 1:
            raise ValueError("join_history >= 0, max_page >= 1 and recent_window >= 1 required")
        if self.max_message_length < 1:
            raise ValueError("max_message_length must be at least 1")
        if self.join_members < 1:
            raise ValueError("join_members must be at least 1")
