"""The full-screen client's model: buffers (rooms, DM conversations, the server buffer), their
bounded scrollback, read positions and unread/mention counts — pure, no I/O, no terminal.

Each :class:`Buffer` keeps at most ``capacity`` entries in memory (100,000 by default); older
messages are dropped from memory and paged back from the server (``history(before=...)``)
when the user scrolls up to them. Entries are kept in one list ordered by an ``order`` key
(a message's ``seq``; a notice takes the newest sequence known when it was written), so
insertions, the read-marker position and paging are binary searches, never scans.

Counting follows the server's ``unread`` rule (docs/protocol.md): a message after your read
position counts unless it is yours or deleted; in a room it mentions you if its text has
``@yourname`` as a word (any case), and every unread DM counts as a mention. What the server
counted for messages that are not loaded is kept apart (``outside``) and reconciled as pages
come in or are dropped.
"""

from __future__ import annotations

import bisect
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum

from parlour.client.types import Attachment, Unread, attachment_of
from parlour.protocol import MessageRecord, name_key

from .viewport import Viewport

__all__ = [
    "DEFAULT_CAPACITY",
    "Buffer",
    "BufferKind",
    "BufferList",
    "Entry",
    "EntryKind",
    "Target",
    "mention_pattern",
]

#: entries kept in memory per buffer; older ones are paged back from the server on demand
DEFAULT_CAPACITY = 100_000
#: recent speakers remembered per buffer (completion offers them first)
_SPEAKERS = 64
#: online-member names kept per room (the server lists at most 100 at join)
_MEMBERS = 2000


class BufferKind(Enum):
    SERVER = "server"
    ROOM = "room"
    DM = "dm"


@dataclass(frozen=True, slots=True)
class Target:
    """What a buffer is about: a room, a DM peer, or the server itself."""

    kind: BufferKind
    name: str = ""

    @property
    def key(self) -> tuple[BufferKind, str]:
        return (self.kind, name_key(self.name) if self.name else "")

    @property
    def label(self) -> str:
        if self.kind is BufferKind.ROOM:
            return f"#{self.name}"
        if self.kind is BufferKind.DM:
            return f"@{self.name}"
        return "server"


class EntryKind(Enum):
    MESSAGE = "message"
    NOTICE = "notice"  # joins, leaves, command output
    ERROR = "error"
    BROADCAST = "broadcast"


def mention_pattern(name: str) -> re.Pattern[str]:
    """``@name`` as a whole word, any case (the server counts mentions the same way)."""
    return re.compile(r"(?<![\w@])@" + re.escape(name) + r"(?![\w])", re.IGNORECASE)


class Entry:
    """One thing in a scrollback: a message (``seq`` set) or a local line. Mutable: an edit or
    a deletion changes it in place and bumps ``version`` (renderers cache by it)."""

    __slots__ = (
        "attachment",
        "deleted",
        "edited",
        "kind",
        "mention",
        "order",
        "own",
        "sender",
        "seq",
        "text",
        "ts",
        "uid",
        "version",
    )

    _next_uid = 0

    def __init__(
        self,
        kind: EntryKind,
        order: int,
        ts: float,
        text: str | None,
        *,
        seq: int | None = None,
        sender: str | None = None,
        own: bool = False,
        mention: bool = False,
        edited: bool = False,
        deleted: bool = False,
        attachment: Attachment | None = None,
    ) -> None:
        self.kind = kind
        self.order = order
        self.ts = ts
        self.text = text
        self.seq = seq
        self.sender = sender
        self.own = own
        self.mention = mention
        self.edited = edited
        self.deleted = deleted
        #: the file the message carries (files in chat), None when none or deleted
        self.attachment = attachment
        self.version = 0
        Entry._next_uid += 1
        self.uid = Entry._next_uid

    @property
    def counts(self) -> bool:
        """True if this message counts as unread when it is after the read position."""
        return self.kind is EntryKind.MESSAGE and not self.own and not self.deleted

    def __repr__(self) -> str:
        return f"Entry({self.kind.value}, seq={self.seq}, {self.sender!r}: {self.text!r})"


def _order(entry: Entry) -> int:
    return entry.order


class Buffer:
    """One scrollback with its read position, counts, members and scroll position."""

    def __init__(self, target: Target, me: str, *, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 10:
            raise ValueError("a buffer keeps at least 10 entries")
        self.target = target
        self.me = me
        self._me_key = name_key(me)
        self._mention = mention_pattern(me)
        self.capacity = capacity
        self.entries: list[Entry] = []
        self._by_seq: dict[int, Entry] = {}
        #: your read position on the server (counts are relative to it)
        self.read_seq = 0
        #: where the read-marker *line* is drawn: the read position when you last left this
        #: buffer, moved by your other sessions; not by reading here (so you still see where
        #: the new messages started)
        self.marker_seq = 0
        #: the newest sequence number known in this room/conversation
        self.last_seq = 0
        #: older messages exist on the server before the first one loaded
        self.has_older = target.kind is not BufferKind.SERVER
        self.loading_older = False
        #: sorted sequence numbers of loaded unread messages, and those that mention you
        self._unread: list[int] = []
        self._mentions: set[int] = set()
        #: unread messages (and mentions) the server counted that are not loaded
        self.outside_unread = 0
        self.outside_mentions = 0
        self.capped = False
        #: local highlights that are not messages (broadcasts in the server buffer)
        self.highlights = 0
        #: online members (name key -> name) and all known members, for rooms
        self.members: dict[str, str] = {}
        self.online: set[str] = set()
        self.members_total = 0
        self._speakers: OrderedDict[str, str] = OrderedDict()
        #: you are no longer in this room (left, kicked, deleted): read-only
        self.parted = False
        self.view = Viewport()
        #: bumped on every change that can alter what is drawn
        self.version = 0
        #: show the read marker at the top of the screen the first time this is drawn
        self.jump_to_marker = False

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return True  # an empty buffer is still a buffer (``buf or other`` must not skip it)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    @property
    def first_seq(self) -> int | None:
        for entry in self.entries:
            if entry.seq is not None:
                return entry.seq
        return None

    @property
    def newest_seq(self) -> int | None:
        for entry in reversed(self.entries):
            if entry.seq is not None:
                return entry.seq
        return None

    @property
    def unread(self) -> int:
        return len(self._unread) + self.outside_unread

    @property
    def mentions(self) -> int:
        return len(self._mentions) + self.outside_mentions + self.highlights

    def get(self, seq: int) -> Entry | None:
        return self._by_seq.get(seq)

    def marker_index(self) -> int | None:
        """Index of the entry the read-marker line goes above: the first message after the
        marker that is not yours (you have read what you wrote; notices do not count)."""
        entries = self.entries
        i = bisect.bisect_right(entries, self.marker_seq, key=_order)
        if i == 0 and self.has_older and self.marker_seq < (self.first_seq or 0) - 1:
            return None  # the marker is further up, not loaded yet
        while i < len(entries) and (entries[i].seq is None or entries[i].own):
            i += 1
        return i if i < len(entries) else None

    def speakers(self) -> list[str]:
        """Names of recent speakers here, most recent first (you excluded)."""
        return list(reversed(self._speakers.values()))

    def is_mine(self, name: str) -> bool:
        return name_key(name) == self._me_key

    # ------------------------------------------------------------------ messages

    def _entry(self, rec: MessageRecord) -> Entry:
        own = self.is_mine(rec.sender)
        text = None if rec.deleted else rec.text
        mention = not own and text is not None and self._mentions_me(text)
        return Entry(
            EntryKind.MESSAGE,
            rec.seq,
            rec.ts,
            text,
            seq=rec.seq,
            sender=rec.sender,
            own=own,
            mention=mention,
            edited=rec.edited,
            deleted=rec.deleted or rec.text is None,
            attachment=attachment_of(rec),
        )

    def _mentions_me(self, text: str) -> bool:
        if self.target.kind is BufferKind.DM:
            return True
        return self._mention.search(text) is not None

    def _count(self, entry: Entry) -> None:
        seq = entry.seq
        if seq is None or seq <= self.read_seq or not entry.counts:
            return
        bisect.insort(self._unread, seq)
        if entry.mention:
            self._mentions.add(seq)

    def _uncount(self, seq: int) -> None:
        i = bisect.bisect_left(self._unread, seq)
        if i < len(self._unread) and self._unread[i] == seq:
            del self._unread[i]
        self._mentions.discard(seq)

    def _touch(self) -> None:
        self.version += 1

    def add(self, rec: MessageRecord) -> bool:
        """A message (live, catch-up, or a page): placed by its sequence; False if known."""
        if rec.seq in self._by_seq:
            self.update(rec)
            return False
        entry = self._entry(rec)
        entries = self.entries
        if not entries or entries[-1].order <= rec.seq:
            index = len(entries)
            entries.append(entry)
        else:
            first = self.first_seq
            if first is not None and rec.seq < first and self.has_older:
                return False  # older than what is loaded: it comes with its page
            index = bisect.bisect_right(entries, rec.seq, key=_order)
            entries.insert(index, entry)
            self.view.inserted(index, 1)
        self._by_seq[rec.seq] = entry
        self.last_seq = max(self.last_seq, rec.seq)
        self._count(entry)
        if not entry.own:
            self._speak(rec.sender)
        self._touch()
        self.trim()
        return True

    def _speak(self, name: str) -> None:
        key = name_key(name)
        self._speakers.pop(key, None)
        self._speakers[key] = name
        if len(self._speakers) > _SPEAKERS:
            self._speakers.popitem(last=False)

    def update(self, rec: MessageRecord) -> bool:
        """An edit or a deletion shown in place; False if the message is not loaded."""
        entry = self._by_seq.get(rec.seq)
        if entry is None:
            return False
        entry.edited = rec.edited or entry.edited
        if rec.deleted or rec.text is None:
            entry.deleted, entry.text, entry.mention = True, None, False
            entry.attachment = None
            self._uncount(rec.seq)
        else:
            entry.text = rec.text
            entry.attachment = attachment_of(rec) or entry.attachment
            entry.mention = not entry.own and self._mentions_me(rec.text)
            if rec.seq > self.read_seq and entry.counts:
                if entry.mention:
                    self._mentions.add(rec.seq)
                else:
                    self._mentions.discard(rec.seq)
        entry.version += 1
        self._touch()
        return True

    def add_older(self, records: Sequence[MessageRecord], has_more: bool) -> int:
        """A ``history`` page older than what is loaded (oldest first); returns how many
        entries were added at the top."""
        self.loading_older = False
        first = self.first_seq
        fresh = [r for r in records if r.seq not in self._by_seq]
        if first is not None:
            fresh = [r for r in fresh if r.seq < first]
        self.has_older = has_more and bool(records)
        if not fresh:
            self._touch()
            return 0
        new = [self._entry(r) for r in fresh]
        # after notices that were written before any of these messages existed
        index = bisect.bisect_left(self.entries, new[0].order, key=_order)
        self.entries[index:index] = new
        self.view.inserted(index, len(new))
        for entry in new:
            assert entry.seq is not None
            self._by_seq[entry.seq] = entry
            if entry.seq > self.read_seq and entry.counts:
                # the server counted it among those we had not loaded
                if self.outside_unread > 0:
                    self.outside_unread -= 1
                if entry.mention and self.outside_mentions > 0:
                    self.outside_mentions -= 1
                self._count(entry)
        self.last_seq = max(self.last_seq, new[-1].seq or 0)
        self._touch()
        return len(new)

    def load_newest(self, records: Sequence[MessageRecord], has_more: bool) -> None:
        """The newest page (from ``join`` or ``history``): added, and whether older exist."""
        for rec in records:
            self.add(rec)
        if self.first_seq is not None and records and records[0].seq == self.first_seq:
            self.has_older = has_more
        elif not records:
            self.has_older = False if not self.entries else self.has_older
        self._touch()

    # ------------------------------------------------------------------ local lines

    def note(self, text: str, ts: float, kind: EntryKind = EntryKind.NOTICE) -> Entry:
        """A local line (command output, a join, an error) at the end of the scrollback."""
        order = max(self.last_seq, self.entries[-1].order if self.entries else 0)
        entry = Entry(kind, order, ts, text)
        self.entries.append(entry)
        self._touch()
        self.trim()
        return entry

    def rewrite(self, entry: Entry, text: str) -> None:
        """Change a local line in place (progress of a long task)."""
        entry.text = text
        entry.version += 1
        self._touch()

    # ------------------------------------------------------------------ read position

    def set_counts(self, row: Unread) -> None:
        """The server's ``unread`` row for this buffer (at login or after a refresh)."""
        self.last_seq = max(self.last_seq, row.last_seq)
        self.read_seq = max(self.read_seq, row.read_seq)
        self.marker_seq = max(self.marker_seq, row.read_seq)
        self._unread = [s for s in self._unread if s > self.read_seq]
        self._mentions = {s for s in self._mentions if s > self.read_seq}
        self.outside_unread = max(0, row.unread - len(self._unread))
        self.outside_mentions = max(0, row.mentions - len(self._mentions))
        self.capped = row.capped
        self._touch()

    def mark_read(self, seq: int, *, elsewhere: bool = False) -> bool:
        """Move the read position up to ``seq`` (never back); True if it moved. With
        ``elsewhere`` (another of your sessions read it) the marker line moves too."""
        if elsewhere and seq > self.marker_seq:
            self.marker_seq = seq
            self._touch()
        if seq <= self.read_seq:
            return False
        self.read_seq = seq
        cut = bisect.bisect_right(self._unread, seq)
        for s in self._unread[:cut]:
            self._mentions.discard(s)
        del self._unread[:cut]
        first = self.first_seq
        if first is None or seq >= first - 1 or seq >= self.last_seq:
            self.outside_unread = self.outside_mentions = 0
            self.capped = False
        self._touch()
        return True

    def clear_highlights(self) -> None:
        if self.highlights:
            self.highlights = 0
            self._touch()

    def left_buffer(self) -> None:
        """You switched away: next time the marker line is where you stopped reading."""
        if self.read_seq != self.marker_seq:
            self.marker_seq = max(self.marker_seq, self.read_seq)
            self._touch()

    # ------------------------------------------------------------------ members

    def set_members(self, members: Iterable[str], online: Iterable[str], total: int) -> None:
        self.members = {name_key(m): m for m in list(members)[:_MEMBERS]}
        self.online = {name_key(m) for m in online}
        self.members_total = max(total, len(self.members))
        self._touch()

    def member_joined(self, name: str) -> None:
        key = name_key(name)
        if key not in self.members:
            self.members_total += 1
        if len(self.members) < _MEMBERS or key in self.members:
            self.members[key] = name
        self.online.add(key)
        self._touch()

    def member_left(self, name: str) -> None:
        key = name_key(name)
        if self.members.pop(key, None) is not None or self.members_total:
            self.members_total = max(0, self.members_total - 1)
        self.online.discard(key)
        self._touch()

    def presence(self, name: str, online: bool) -> bool:
        """A user came online or went away; True if they are a member here."""
        key = name_key(name)
        if key not in self.members:
            return False
        if online:
            self.online.add(key)
        else:
            self.online.discard(key)
        self._touch()
        return True

    def rename(self, new_name: str) -> None:
        self.target = Target(self.target.kind, new_name)
        self._touch()

    # ------------------------------------------------------------------ bounds

    def trim(self) -> None:
        """Drop the oldest entries beyond ``capacity`` (in chunks of a tenth, so appending stays
        cheap). Entries on screen are kept unless the buffer reaches twice its capacity."""
        excess = len(self.entries) - self.capacity
        if excess <= 0:
            return
        drop = excess + self.capacity // 10
        top = self.view.top_index
        if top is not None and top < drop and len(self.entries) < 2 * self.capacity:
            return  # the user reads up there: keep it for now
        drop = min(drop, len(self.entries) - 1)
        gone = self.entries[:drop]
        del self.entries[:drop]
        for entry in gone:
            if entry.seq is None:
                continue
            self._by_seq.pop(entry.seq, None)
            if entry.seq > self.read_seq and entry.counts:
                self.outside_unread += 1
                if entry.seq in self._mentions:
                    self.outside_mentions += 1
                self._uncount(entry.seq)
        if any(e.seq is not None for e in gone):
            self.has_older = True
        self.view.removed_front(drop)
        self._touch()


class BufferList:
    """The buffers in display order: the server buffer, then rooms, then DM conversations,
    each group in the order they were opened; and which one is current."""

    def __init__(self, me: str, *, capacity: int = DEFAULT_CAPACITY) -> None:
        self.me = me
        self.capacity = capacity
        self._buffers: dict[tuple[BufferKind, str], Buffer] = {}
        server = Buffer(Target(BufferKind.SERVER), me, capacity=capacity)
        server.has_older = False
        self._buffers[server.target.key] = server
        self.current: Buffer = server

    @property
    def server(self) -> Buffer:
        return self._buffers[(BufferKind.SERVER, "")]

    def ordered(self) -> list[Buffer]:
        rank = {BufferKind.SERVER: 0, BufferKind.ROOM: 1, BufferKind.DM: 2}
        items = list(self._buffers.values())
        return sorted(items, key=lambda b: rank[b.target.kind])  # stable: opening order

    def __len__(self) -> int:
        return len(self._buffers)

    def __iter__(self) -> Iterator[Buffer]:
        return iter(self.ordered())

    def find(self, target: Target) -> Buffer | None:
        return self._buffers.get(target.key)

    def room(self, name: str) -> Buffer | None:
        return self._buffers.get((BufferKind.ROOM, name_key(name)))

    def dm(self, peer: str) -> Buffer | None:
        return self._buffers.get((BufferKind.DM, name_key(peer)))

    def open(self, target: Target) -> Buffer:
        """The buffer for ``target``, created if needed."""
        buf = self._buffers.get(target.key)
        if buf is None:
            buf = Buffer(target, self.me, capacity=self.capacity)
            self._buffers[target.key] = buf
        return buf

    def close(self, buf: Buffer) -> None:
        if buf.target.kind is BufferKind.SERVER:
            return
        self._buffers.pop(buf.target.key, None)
        if self.current is buf:
            self.current = self.server

    def rename_room(self, old: str, new: str) -> Buffer | None:
        """A room was renamed: its buffer keeps its place, scrollback and counts."""
        old_key = (BufferKind.ROOM, name_key(old))
        buf = self._buffers.get(old_key)
        if buf is None:
            return None
        buf.rename(new)
        self._buffers = {
            (buf.target.key if key == old_key else key): value
            for key, value in self._buffers.items()
        }
        return buf

    def switch(self, buf: Buffer) -> bool:
        """Make ``buf`` current; True if it changed."""
        if buf is self.current:
            return False
        self.current.left_buffer()
        self.current = buf
        buf.clear_highlights()
        return True

    def by_number(self, number: int) -> Buffer | None:
        """Buffer ``number`` as shown in the list (1 = the server buffer)."""
        order = self.ordered()
        return order[number - 1] if 1 <= number <= len(order) else None

    def number_of(self, buf: Buffer) -> int:
        return self.ordered().index(buf) + 1

    def step(self, delta: int) -> Buffer:
        order = self.ordered()
        i = order.index(self.current)
        return order[(i + delta) % len(order)]

    def next_active(self) -> Buffer | None:
        """The buffer to read next: the first with mentions, else the first with unread
        messages (the current one excluded)."""
        others = [b for b in self.ordered() if b is not self.current]
        for buf in others:
            if buf.mentions:
                return buf
        for buf in others:
            if buf.unread:
                return buf
        return None

    def rooms(self) -> list[str]:
        return [b.target.name for b in self.ordered() if b.target.kind is BufferKind.ROOM]
