"""The title bar and the status bar's text (pure: buffers in, Rich text out)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.style import Style
from rich.text import Text

from parlour.cli._render import clean

from .buffers import Buffer, BufferKind, BufferList

__all__ = ["status_text", "title_text"]


def title_text(buf: Buffer) -> Text:
    label = clean(buf.target.label)
    if buf.target.kind is BufferKind.ROOM:
        extra = f"{len(buf.online)} online, {buf.members_total} members"
        if buf.parted:
            extra = "you are no longer in this room (/join to come back, /close)"
        return Text(f" {label} — {extra}")
    if buf.target.kind is BufferKind.DM:
        return Text(f" {label} — direct messages")
    return Text(" parlour — server messages and broadcasts; /help for commands and keys")


def status_text(bufs: BufferList, me: str, connection: str, items: Sequence[Text] = ()) -> Text:
    """``[alice] 2:#general | connected | -MORE(3)- | Act: 4:@bob(1,1!) 3:#random(5)``:
    who you are, the current buffer, the connection, ``items`` (running file transfers...),
    how many entries are below the screen, and the other buffers with activity (mentions
    first)."""
    buf = bufs.current
    out = Text(" ")
    out.append(f"[{clean(me)}]", style=Style(bold=True))
    out.append(f" {bufs.number_of(buf)}:{clean(buf.target.label)}")
    ok = connection == "connected"
    out.append(" | ")
    out.append(connection, style=Style(color="green") if ok else Style(color="yellow", bold=True))
    for item in items:
        out.append(" | ")
        out.append_text(item)
    below = buf.view.below(len(buf))
    if below:
        out.append(f" | -MORE({below})-", style=Style(reverse=True))
    if buf.loading_older:
        out.append(" | loading older…", style=Style(dim=True))
    active = [
        (n, b)
        for n, b in enumerate(bufs.ordered(), start=1)
        if b is not buf and (b.unread or b.mentions)
    ]
    active.sort(key=lambda item: (not item[1].mentions, item[0]))
    if active:
        out.append(" | Act: ")
        for n, b in active:
            style = Style(color="red", bold=True) if b.mentions else Style(color="yellow")
            counts = f"{b.unread}{'+' if b.capped else ''}"
            if b.mentions:
                counts += f",{b.mentions}!"
            out.append(f"{n}:{clean(b.target.label)}({counts}) ", style=style)
    return out
