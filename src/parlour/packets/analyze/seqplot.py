"""TCP sequence-number graph (time vs relative sequence number, one panel per direction).

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display needed): data
segments as vertical bars from their first to their last byte, retransmissions in red, and the
other side's acknowledgements and advertised window as step lines, tcptrace-style.
"""

from __future__ import annotations

from pathlib import Path

from parlour.packets.analyze.dissect import Analysis
from parlour.packets.analyze.tcp_analysis import Conversation, endpoint_text, retransmitted

__all__ = ["PlotError", "largest_conversation", "plot_sequence"]


class PlotError(ValueError):
    """Nothing to plot, or the picture cannot be written."""


def largest_conversation(analysis: Analysis) -> Conversation:
    if not analysis.conversations:
        raise PlotError("the capture has no TCP conversation to plot")
    return max(analysis.conversations, key=lambda c: (c.bytes, -c.stream))


def plot_sequence(
    analysis: Analysis, stream: int | None, path: str | Path, direction: str = "both"
) -> Conversation:
    """Draw conversation *stream* (default: the largest) to *path* (PNG, SVG or PDF)."""
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
    packets = [pa for pa in analysis.packets if pa.tcp is not None and pa.tcp.stream == conv.stream]
    start = conv.start_rel_ns
    fig = Figure(figsize=(10, 7), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True)
    ends = {True: endpoint_text(conv.client), False: endpoint_text(conv.server)}
    for ax, from_client in zip(axes, (True, False), strict=True):
        xs: list[float] = []
        lo: list[int] = []
        hi: list[int] = []
        rx: list[float] = []
        rlo: list[int] = []
        rhi: list[int] = []
        ack_t: list[float] = []
        acks: list[int] = []
        wins: list[int] = []
        for pa in packets:
            t = pa.tcp
            assert t is not None
            when = (pa.time_rel_ns - start) / 1e9
            if t.from_client == from_client and t.seglen:
                is_rx = retransmitted(t.analysis)
                (rx if is_rx else xs).append(when)
                (rlo if is_rx else lo).append(t.rel_seq)
                (rhi if is_rx else hi).append(t.rel_seq + t.seglen)
            elif t.from_client != from_client and t.flags & 0x10:
                ack_t.append(when)
                acks.append(t.rel_ack)
                wins.append(t.rel_ack + t.window)
        if acks:
            ax.step(ack_t, acks, where="post", color="0.45", linewidth=1, label="ACKed")
            ax.step(ack_t, wins, where="post", color="tab:green", linewidth=0.8, alpha=0.7,
                    linestyle="--", label="ACK + window")  # fmt: skip
        if xs:
            ax.vlines(xs, lo, hi, color="tab:blue", linewidth=2)
            ax.plot(xs, hi, "o", color="tab:blue", markersize=3, label="data segment")
        if rx:
            ax.vlines(rx, rlo, rhi, color="tab:red", linewidth=2)
            ax.plot(rx, rhi, "x", color="tab:red", markersize=6, label="retransmission")
        top = max([*hi, *rhi, *acks, 1])
        ax.set_ylim(-0.03 * top, top * 1.08)  # the window line may run off the top: data first
        ax.set_title(f"{ends[from_client]} → {ends[not from_client]}", fontsize=10)
        ax.set_ylabel("relative sequence number")
        ax.grid(True, alpha=0.3)
        if xs or rx or acks:
            ax.legend(loc="upper left", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data in this direction", ha="center", va="center",
                    transform=ax.transAxes, color="0.5")  # fmt: skip
    axes[1].set_xlabel("time since the conversation's first packet (s)")
    fig.suptitle(f"TCP sequence numbers, conversation {conv.stream}")
    try:
        fig.savefig(str(path), dpi=100)
    except (OSError, ValueError) as exc:
        raise PlotError(f"cannot write {path}: {exc}") from None
    return conv
