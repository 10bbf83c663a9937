"""TCP sequence-number graph (time vs relative sequence number), tcptrace-style.

One panel per direction (or only the direction asked for): the sender's data segments as
vertical bars from their first to their last byte — retransmissions in red, out-of-order ones
in orange — and what the receiver says back: its ACK line, its window edge (ACK + window),
its SACK blocks, its duplicate ACKs and the moments its window is zero; a gap the capture
missed ("previous segment not captured") is marked where it opens. The window line always
stays visible: when it runs far above the data it is drawn along the top edge with its value.

:func:`sequence_series` computes what to draw (pure, testable); :func:`plot_sequence` draws it
with matplotlib's object API on the Agg canvas (no pyplot, no display needed).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from parlour.packets.analyze.dissect import Analysis, PacketAnalysis
from parlour.packets.analyze.tcp_analysis import (
    DUPLICATE_ACK,
    LOST_SEGMENT,
    OUT_OF_ORDER,
    Conversation,
    endpoint_text,
    retransmitted,
)
from parlour.packets.wire.tcp import decode_options

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "PlotError",
    "SequenceSeries",
    "largest_conversation",
    "plot_sequence",
    "sequence_series",
]

Directions = Literal["both", "client", "server"]
_M32 = 0xFFFFFFFF
#: the window line may take the y axis up to this many times the data's top; above, it is
#: drawn along the top edge with its value written next to it
WINDOW_SCALE_LIMIT = 3.0


class PlotError(ValueError):
    """Nothing to plot, or the picture cannot be written."""


@dataclass(slots=True)
class SequenceSeries:
    """What one panel shows: data one side sends and the other side's answers (seconds since
    the conversation's first packet; sequence numbers relative, as tshark shows them)."""

    title: str
    #: (time, first byte, end) of new data, retransmissions and out-of-order segments
    data: list[tuple[float, int, int]] = field(default_factory=list)
    resent: list[tuple[float, int, int]] = field(default_factory=list)
    out_of_order: list[tuple[float, int, int]] = field(default_factory=list)
    #: (time, where the capture's gap starts, where the segment after it starts)
    lost: list[tuple[float, int, int]] = field(default_factory=list)
    #: the receiver: (time, ACK), (time, ACK + window), duplicate ACKs, zero windows
    acks: list[tuple[float, int]] = field(default_factory=list)
    window: list[tuple[float, int]] = field(default_factory=list)
    dup_acks: list[tuple[float, int]] = field(default_factory=list)
    zero_window: list[tuple[float, int]] = field(default_factory=list)
    #: (time, left edge, right edge) of each SACK block
    sacks: list[tuple[float, int, int]] = field(default_factory=list)

    @property
    def data_top(self) -> int:
        ends = [e for _t, _a, e in self.data + self.resent + self.out_of_order]
        ends += [e for _t, _a, e in self.sacks] + [a for _t, a in self.acks]
        return max([*ends, 1])

    def y_limit(self) -> tuple[int, bool]:
        """The top of the y axis, and whether the window line goes above it (it is then
        drawn along the top edge, with its highest value written there)."""
        top = self.data_top
        win_top = max((w for _t, w in self.window), default=0)
        limit = int(max(top, min(win_top, top * WINDOW_SCALE_LIMIT)) * 1.06)
        return limit, win_top > limit


def largest_conversation(analysis: Analysis) -> Conversation:
    if not analysis.conversations:
        raise PlotError("the capture has no TCP conversation to plot")
    return max(analysis.conversations, key=lambda c: (c.bytes, -c.stream))


def _sack_blocks(pa: PacketAnalysis) -> list[tuple[int, int]]:
    t = pa.tcp
    if t is None or not pa.packet.tcp_options:
        return []
    with contextlib.suppress(ValueError):
        blocks = decode_options(pa.packet.tcp_options).sack_blocks
        return [((a - t.peer_base) & _M32, (b - t.peer_base) & _M32) for a, b in blocks]
    return []


def sequence_series(analysis: Analysis, conv: Conversation, from_client: bool) -> SequenceSeries:
    """The data *from_client* (or from the server) sends in *conv*, and the receiver's ACKs."""
    ends = {True: endpoint_text(conv.client), False: endpoint_text(conv.server)}
    s = SequenceSeries(f"{ends[from_client]} → {ends[not from_client]}")
    start = conv.start_rel_ns
    sent_end: int | None = None
    for pa in analysis.packets:
        t = pa.tcp
        if t is None or t.stream != conv.stream:
            continue
        when = (pa.time_rel_ns - start) / 1e9
        if t.from_client == from_client:
            if not t.seglen:
                continue
            end = (t.rel_seq + t.seglen) & _M32
            if LOST_SEGMENT in t.analysis and sent_end is not None:
                s.lost.append((when, sent_end, t.rel_seq))
            segment = (when, t.rel_seq, end)
            if retransmitted(t.analysis):
                s.resent.append(segment)
            elif OUT_OF_ORDER in t.analysis:
                s.out_of_order.append(segment)
            else:
                s.data.append(segment)
            if sent_end is None or (end - sent_end) & _M32 < 0x80000000:
                sent_end = end
        elif t.flags & 0x10:  # the receiver's ACK
            s.acks.append((when, t.rel_ack))
            s.window.append((when, t.rel_ack + t.window))
            if DUPLICATE_ACK in t.analysis:
                s.dup_acks.append((when, t.rel_ack))
            if t.window == 0 and not t.flags & 0x07:  # not on SYN, FIN or RST
                s.zero_window.append((when, t.rel_ack))
            s.sacks.extend((when, a, b) for a, b in _sack_blocks(pa))
    return s


def plot_sequence(
    analysis: Analysis, stream: int | None, path: str | Path, direction: Directions = "both"
) -> Conversation:
    """Draw conversation *stream* (default: the largest) to *path* (PNG, SVG or PDF): the data
    the client sends, the server sends, or both (one panel each)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if stream is None:
        conv = largest_conversation(analysis)
    else:
        found = [c for c in analysis.conversations if c.stream == stream]
        if not found:
            count = len(analysis.conversations)
            raise PlotError(
                f"no TCP conversation {stream} (the capture has "
                + (f"conversations 0-{count - 1})" if count else "none)")
            )
        conv = found[0]
    sides = {"both": (True, False), "client": (True,), "server": (False,)}[direction]
    fig = Figure(figsize=(10, 3.5 + 3.5 * len(sides)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(sides), 1, sharex=True, squeeze=False)[:, 0]
    for ax, from_client in zip(axes, sides, strict=True):
        _panel(ax, sequence_series(analysis, conv, from_client))
    axes[-1].set_xlabel("time since the conversation's first packet (s)")
    fig.suptitle(f"TCP sequence numbers, conversation {conv.stream}")
    try:
        fig.savefig(str(path), dpi=100)
    except (OSError, ValueError) as exc:
        raise PlotError(f"cannot write {path}: {exc}") from None
    return conv


def _panel(a: Axes, s: SequenceSeries) -> None:
    limit, clipped = s.y_limit()
    win_top = max((w for _t, w in s.window), default=0)
    if s.acks:
        ts, acks = zip(*s.acks, strict=True)
        a.step(ts, acks, where="post", color="0.45", linewidth=1, label="ACKed")
        wt, edges = zip(*s.window, strict=True)
        shown = [min(e, limit * 0.985) for e in edges]
        a.step(wt, shown, where="post", color="tab:green", linewidth=0.9, alpha=0.8,
               linestyle="--", label="ACK + receive window")  # fmt: skip
        if clipped:
            a.annotate(
                f"window edge off the scale (up to {win_top:,})", xy=(0.99, 0.985),
                xycoords="axes fraction", ha="right", va="top", fontsize=7, color="tab:green",
            )  # fmt: skip
    for series, colour, marker, label in (
        (s.data, "tab:blue", "o", "data segment"),
        (s.resent, "tab:red", "x", "retransmission"),
        (s.out_of_order, "tab:orange", "d", "out of order"),
    ):
        if series:
            ts, lo, hi = zip(*series, strict=True)
            a.vlines(ts, lo, hi, color=colour, linewidth=2)
            a.plot(ts, hi, marker, color=colour, markersize=3 if marker == "o" else 6,
                   linestyle="none", label=label)  # fmt: skip
    if s.sacks:
        ts, lo, hi = zip(*s.sacks, strict=True)
        a.vlines(ts, lo, hi, color="tab:purple", linewidth=3, alpha=0.6, label="SACK block")
    if s.dup_acks:
        ts, acks = zip(*s.dup_acks, strict=True)
        a.plot(ts, acks, "^", color="tab:orange", markersize=5, linestyle="none",
               label="duplicate ACK")  # fmt: skip
    if s.zero_window:
        ts, acks = zip(*s.zero_window, strict=True)
        a.plot(ts, acks, "s", color="black", markersize=6, linestyle="none",
               label="zero window")  # fmt: skip
    if s.lost:
        ts, lo, hi = zip(*s.lost, strict=True)
        a.vlines(ts, lo, hi, color="tab:red", linewidth=1, linestyle=":",
                 label="not captured (gap)")  # fmt: skip
    a.set_ylim(-0.03 * limit, limit)
    a.set_title(s.title, fontsize=10)
    a.set_ylabel("relative sequence number")
    a.grid(True, alpha=0.3)
    if s.data or s.resent or s.out_of_order or s.acks:
        a.legend(loc="upper left", fontsize=8)
    else:
        a.text(0.5, 0.5, "no data in this direction", ha="center", va="center",
               transform=a.transAxes, color="0.5")  # fmt: skip
