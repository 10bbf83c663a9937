"""The words of file transfers, shared by the line mode and the full-screen client (pure).

Lines carry the line mode's prefixes (``* `` news, ``! `` something that needs you or went
wrong); the full-screen client strips them (:func:`unprefixed`) and shows ``!`` lines as
alerts. Everything that came from another user or the server passes through
:func:`~parlour.cli._render.clean`.
"""

from __future__ import annotations

from dataclasses import dataclass

from parlour.cli._render import (
    clean,
    format_duration,
    format_rate,
    format_size,
    render_file_result,
)
from parlour.client import FileResult, FileTransfers, Transfer
from parlour.p2p import Progress

__all__ = [
    "ProgressFigures",
    "arrow",
    "bar",
    "final_line",
    "listing",
    "notice_line",
    "percent",
    "progress_figures",
    "progress_line",
    "unprefixed",
]

#: cells of the text progress bar in a progress line
BAR = 12


def arrow(t: Transfer) -> str:
    """``→ bob`` (you send) or ``← alice`` (you receive)."""
    return f"→ {clean(t.peer)}" if t.direction == "send" else f"← {clean(t.peer)}"


def percent(done: int, total: int) -> int:
    """Whole percent, rounded down (100 only when all of it is there)."""
    return 100 if total <= 0 else max(0, min(100, 100 * done // total))


def bar(done: int, total: int, cells: int = BAR) -> str:
    full = cells if total <= 0 else max(0, min(cells, cells * done // total))
    return "█" * full + "░" * (cells - full)


@dataclass(frozen=True, slots=True)
class ProgressFigures:
    speed: str  # "2.00 MB/s"
    eta: str  # "ETA 3 s", or "checking" once every byte is there (the hash is being checked)
    via: str  # " (relay)" through the server's relay, else ""


def progress_figures(p: Progress) -> ProgressFigures:
    eta = "ETA " + format_duration(p.eta) if p.done < p.total else "checking"
    return ProgressFigures(format_rate(p.rate), eta, " (relay)" if p.via_relay else "")


def progress_line(t: Transfer, p: Progress | None, *, end: str | None = None) -> str:
    """``[file 3] a.iso ← alice: ████░░░░░░░░ 1.20 MB of 3.00 MB (40 %), 2.00 MB/s, ETA 1 s``;
    with ``end`` (a transfer that ended) the rate and ETA give way to it."""
    done = p.done if p is not None else 0
    total = p.total if p is not None else t.size
    line = (
        f"[file {t.number}] {clean(t.filename)} {arrow(t)}: {bar(done, total)} "
        f"{format_size(done)} of {format_size(total)} ({percent(done, total)} %)"
    )
    if end is not None:
        via = " (relay)" if p is not None and p.via_relay else ""
        return f"{line}, {end}{via}"
    if p is None:
        return f"{line}, starting"
    fig = progress_figures(p)
    return f"{line}, {fig.speed}, {fig.eta}{fig.via}"


def notice_line(t: Transfer, text: str) -> str:
    """A notice of a transfer (accepted, the relay fallback, an attempt that failed)."""
    return f"* [file {t.number}] {clean(text)}"


def final_line(t: Transfer, result: FileResult) -> str:
    """How the transfer ended: verified (where, how fast, direct or relayed) or failed why."""
    return render_file_result(
        t.number,
        t.direction,
        t.peer,
        t.filename,
        result.ok,
        result.message,
        t.size,
        result.seconds,
        result.via_relay,
        str(result.path) if result.path is not None else None,
    )


def listing(files: FileTransfers) -> list[str]:
    """``/transfers``: the offers waiting for you, then your transfers with their state."""
    lines = [
        f"  [file {o.number}] {clean(o.filename)} ({format_size(o.size)}) from "
        f"{clean(o.sender)} — /accept {o.number}"
        for o in files.incoming.values()
        if o.offer not in files.transfers
    ]
    for t in files.transfers.values():
        done = t.progress.done if t.progress is not None else 0
        pct = f" {percent(done, t.size)} %" if t.size else ""
        state = t.result.message if t.result is not None else t.state
        lines.append(
            f"  [file {t.number}] {clean(t.filename)} {arrow(t)}: {clean(state)}{pct}"
            f" ({format_size(t.size)})"
        )
    return lines or ["(no file offers or transfers)"]


def unprefixed(line: str) -> tuple[str, bool]:
    """A line without its ``* ``/``! `` prefix, and whether it was an alert (``!``)."""
    if line.startswith(("* ", "! ")):
        return line[2:], line[0] == "!"
    return line, False
