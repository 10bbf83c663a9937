"""A set of integers kept as sorted, disjoint, half-open ranges ``[start, end)``.

Used for bytes of the file (held, received, written, acknowledged) and for packet numbers
(received, acknowledged). Appending at the top, the common case for both, is O(1); anything
else is a bisect plus a list splice.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

__all__ = ["RangeSet"]


class RangeSet:
    """Disjoint, non-adjacent ``[start, end)`` ranges in increasing order."""

    __slots__ = ("_ends", "_starts")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    def __len__(self) -> int:
        """The number of ranges (not of integers: see :meth:`total`)."""
        return len(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self._starts, self._ends, strict=True)

    def __repr__(self) -> str:
        return f"RangeSet({list(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeSet):
            return NotImplemented
        return self._starts == other._starts and self._ends == other._ends

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> RangeSet:
        out = RangeSet()
        out._starts = self._starts.copy()
        out._ends = self._ends.copy()
        return out

    def total(self) -> int:
        """How many integers the set holds."""
        return sum(self._ends) - sum(self._starts)

    @property
    def first_start(self) -> int | None:
        return self._starts[0] if self._starts else None

    @property
    def last_end(self) -> int | None:
        return self._ends[-1] if self._ends else None

    def prefix_end(self, origin: int = 0) -> int:
        """The end of the run that starts at ``origin`` (``origin`` itself when absent)."""
        if self._starts and self._starts[0] <= origin:
            i = bisect_right(self._starts, origin) - 1
            if self._ends[i] > origin:
                return self._ends[i]
        return origin

    def __contains__(self, value: int) -> bool:
        ends = self._ends
        if ends and value >= ends[-1]:
            return False
        i = bisect_right(self._starts, value) - 1
        return i >= 0 and value < ends[i]

    def covers(self, start: int, end: int) -> bool:
        """Whether every integer of ``[start, end)`` is in the set (true when empty)."""
        if start >= end:
            return True
        i = bisect_right(self._starts, start) - 1
        return i >= 0 and self._ends[i] >= end

    def add(self, start: int, end: int) -> int:
        """Add ``[start, end)``; return how many integers were not already there."""
        if start >= end:
            return 0
        starts, ends = self._starts, self._ends
        if not ends or start > ends[-1]:
            starts.append(start)
            ends.append(end)
            return end - start
        if start == ends[-1]:
            ends[-1] = end
            return end - start
        # Ranges that touch or overlap [start, end) are i..j-1.
        i = bisect_left(ends, start)
        j = bisect_right(starts, end)
        if i == j:
            starts.insert(i, start)
            ends.insert(i, end)
            return end - start
        new_start = min(start, starts[i])
        new_end = max(end, ends[j - 1])
        before = sum(ends[i:j]) - sum(starts[i:j])
        starts[i:j] = [new_start]
        ends[i:j] = [new_end]
        return (new_end - new_start) - before

    def add_new(self, start: int, end: int) -> list[tuple[int, int]]:
        """Add ``[start, end)`` and return the parts of it that were not there before."""
        gaps = self.gaps(start, end)
        if gaps:
            self.add(start, end)
        return gaps

    def gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` that are not in the set, in order."""
        if start >= end:
            return []
        starts, ends = self._starts, self._ends
        if not ends or start >= ends[-1]:
            return [(start, end)]
        out: list[tuple[int, int]] = []
        i = bisect_right(ends, start)  # first range ending after start
        cursor = start
        while i < len(starts) and starts[i] < end:
            if starts[i] > cursor:
                out.append((cursor, starts[i]))
            cursor = max(cursor, ends[i])
            if cursor >= end:
                return out
            i += 1
        if cursor < end:
            out.append((cursor, end))
        return out

    def first_gap(self, start: int, limit: int) -> tuple[int, int] | None:
        """The first part of ``[start, limit)`` missing from the set, or None."""
        if start >= limit:
            return None
        nxt = self.prefix_end(start)
        if nxt >= limit:
            return None
        i = bisect_right(self._starts, nxt)
        gap_end = self._starts[i] if i < len(self._starts) else limit
        return (nxt, min(gap_end, limit))

    def discard_below(self, floor: int) -> None:
        """Forget everything below ``floor`` (the caller treats it as settled)."""
        starts, ends = self._starts, self._ends
        if not starts or starts[0] >= floor:
            return
        i = bisect_right(ends, floor)
        del starts[:i]
        del ends[:i]
        if starts and starts[0] < floor:
            starts[0] = floor

    def top(self, count: int) -> list[tuple[int, int]]:
        """The ``count`` highest ranges, highest first."""
        n = len(self._starts)
        lo = max(0, n - count)
        return [(self._starts[k], self._ends[k]) for k in range(n - 1, lo - 1, -1)]
