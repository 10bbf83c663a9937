"""`CoreConfig`: every knob of the chat domain, with its default."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from parlour import __version__

__all__ = ["BroadcastPolicy", "CoreConfig", "DuplicateLoginPolicy"]

DuplicateLoginPolicy = Literal["replace", "reject", "allow"]
BroadcastPolicy = Literal["admins", "everyone"]


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Settings of the chat core. Times are in seconds."""

    #: minimum password length at sign-up and password change
    password_min_length: int = 8
    #: consecutive failed logins of one user name from one address that lock that pair out,
    #: and for how long (parlour.core.throttles)
    lockout_threshold: int = 3
    lockout_seconds: float = 60.0
    #: failed logins from one address, for any names, within the window that lock the address
    #: out of every login (doubling with each lock, at most an hour)
    address_lockout_threshold: int = 20
    address_lockout_window: float = 600.0
    #: failed logins of one account, from any addresses, within the window that put it under
    #: attack: addresses that failed on it are then locked out of it
    account_lockout_threshold: int = 50
    account_lockout_window: float = 3600.0
    #: a second login of a user with a live session: `replace` ends the old session
    #: (`disconnect` code `logged_out`) and lets the new one in; `reject` refuses it
    #: (`already_logged_in`) while the old session is alive (it sent something within two
    #: heartbeats), else replaces it; `allow` keeps both
    duplicate_login: DuplicateLoginPolicy = "allow"
    #: who may `broadcast` to every user: `admins`, or `everyone`
    broadcast_policy: BroadcastPolicy = "admins"
    #: log each message's text (sender, target and size are logged at INFO anyway)
    log_message_text: bool = False
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
    #: (sender, client id) pairs remembered for idempotent resends (the newest; loaded from the
    #: store at start), and for how long after the original a resend is recognised
    client_id_memory: int = 100_000
    client_id_ttl: float = 86_400.0
    #: how long a session token (issued at login, for logging in again without the password)
    #: stays valid, in seconds (0: no tokens), and how many one user may hold
    session_token_ttl: float = 30 * 86_400.0
    session_tokens_per_user: int = 20
    #: DM conversations kept in memory (the least recently used are dropped and read again
    #: when needed)
    conversation_cache: int = 10_000
    #: longest accepted message text, in characters
    max_message_length: int = 4000
    #: token bucket per connection for message-producing requests (send, dm, edit, delete,
    #: broadcast): sustained rate per second and bucket capacity (burst)
    rate_per_second: float = 20.0
    rate_burst: float = 10.0
    #: token bucket per connection for reads (history, since, join, who, rooms, blocks, bans,
    #: audit): a request costs 1, plus 1 per 100 messages or users it returns
    read_rate_per_second: float = 20.0
    read_burst: float = 40.0
    #: window of `who {"recent": true}` in seconds (users logged in or active within the last
    #: hour); `who {"since": seconds}` asks for another window
    presence_window: float = 3600.0
    #: longest kick/ban reason and broadcast text are bounded by max_message_length too
    max_reason_length: int = 200
    #: entries of each login-throttle table (the least recently touched are dropped first)
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
    #: file transfers (`file_offer` and the rest; docs/design/p2p-brokering.md): allowed at
    #: all, how long an offer stays open, how many open offers one user may have made, how
    #: many may wait for one user, and how many this node holds in all
    file_transfers: bool = True
    file_offer_ttl: float = 600.0
    file_offers_per_user: int = 20
    file_offers_per_target: int = 50
    file_offers_max: int = 10_000
    #: the UDP relay clients are told about: (host or None for "the host you connected to",
    #: port); None when this node runs no relay (no observed endpoints, no relay fallback)
    file_relay: tuple[str | None, int] | None = None
    #: files in chat (uploads over tus, docs/design/files.md): where the web listener takes
    #: them (None: no web listener, uploads off), the largest file, each user's quota (bytes
    #: of their uploads), unfinished uploads one user may have, and how long a file token
    #: stays valid
    upload_url: str | None = None
    #: where the web listener is, for clients of the TCP door (the files URLs are paths on
    #: it): its absolute URL when known (``public_url``, or a listener bound to one address),
    #: and its port (clients use it with the host they connected to); set once it listens
    web_url: str | None = None
    web_port: int | None = None
    max_file_size: int = 100 * 1024 * 1024
    user_quota: int = 1024 * 1024 * 1024
    max_concurrent_uploads: int = 4
    file_token_ttl: float = 900.0
    #: the key file tokens are signed with (`file_token_key(secret_key)`): the same on every
    #: node of a cluster; None: each node draws a random one (tokens valid on that node only)
    file_token_key: bytes | None = field(default=None, repr=False)
    #: announced in the `hello` reply (the frame limit is enforced by the transport's codec)
    server_name: str = f"parlour/{__version__}"
    heartbeat_s: float = 30.0
    max_frame: int = 65536
    #: several nodes share the store (scale-out, docs/design/scale-out.md): the store assigns
    #: sequence numbers, committed messages are applied through `ChatService.committed` (own
    #: commits) and `ChatService.remote` (other nodes'), and what other nodes must know of is
    #: said in `Outcome.remote`
    cluster: bool = False
    #: a node that sees a gap in a room's (or conversation's) sequence waits this long for the
    #: bus to bring what is missing before it reads it from the store
    gap_grace: float = 0.05

    def __post_init__(self) -> None:
        if self.password_min_length < 1:
            raise ValueError("password_min_length must be at least 1")
        if self.lockout_threshold < 1:
            raise ValueError("lockout_threshold must be at least 1")
        if self.lockout_seconds < 0:
            raise ValueError("lockout_seconds must not be negative")
        if self.duplicate_login not in ("replace", "reject", "allow"):
            raise ValueError("duplicate_login must be 'replace', 'reject' or 'allow'")
        if self.rate_per_second <= 0 or self.rate_burst < 1:
            raise ValueError("rate_per_second must be > 0 and rate_burst >= 1")
        if self.read_rate_per_second <= 0 or self.read_burst < 1:
            raise ValueError("read_rate_per_second must be > 0 and read_burst >= 1")
        if self.broadcast_policy not in ("admins", "everyone"):
            raise ValueError("broadcast_policy must be 'admins' or 'everyone'")
        if self.conversation_cache < 1:
            raise ValueError("conversation_cache must be at least 1")
        if self.session_token_ttl < 0 or self.session_tokens_per_user < 1:
            raise ValueError("session_token_ttl >= 0 and session_tokens_per_user >= 1 required")
        if self.join_history < 0 or self.max_page < 1 or self.recent_window < 1:
            raise ValueError("join_history >= 0, max_page >= 1 and recent_window >= 1 required")
        if self.max_message_length < 1:
            raise ValueError("max_message_length must be at least 1")
        if self.join_members < 1:
            raise ValueError("join_members must be at least 1")
        if self.file_offer_ttl <= 0:
            raise ValueError("file_offer_ttl must be positive")
        if min(self.file_offers_per_user, self.file_offers_per_target, self.file_offers_max) < 1:
            raise ValueError("file offer limits must be at least 1")
