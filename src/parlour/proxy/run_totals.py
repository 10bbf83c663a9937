"""Sans-I/O accounting of this run's traffic over backends that come and go.

The proxy's totals (dashboard cards, `parlour_proxy_bytes_total`) count this run, like its
request and connection counters; each backend's own counters also carry what earlier
runs saved (`Backend.restore` sets the `base_bytes_*` they started from). A counter must
never go down while the process runs, so a removed backend keeps its share: it is
"retired" — still counted, since requests in flight on it finish and add their bytes —
and folded into fixed sums once it has nothing in flight. A backend removed and added
again in the same run goes on from its counts (`revive`), rather than starting again from
zero, so its per-backend counters do not reset either.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from parlour.proxy.control import BackendSnapshot
from parlour.proxy.pool import Backend

__all__ = ["RunTotals"]

MAX_REMEMBERED = 1024  # removed backends whose counts a re-add continues from


class RunTotals:
    def __init__(self) -> None:
        self._retired: list[Backend] = []  # removed, maybe still finishing requests
        self._folded_in = 0
        self._folded_out = 0
        self._last: OrderedDict[str, BackendSnapshot] = OrderedDict()

    def retire(self, b: Backend, snap: BackendSnapshot) -> None:
        """`b` was removed; `snap` is its figures now (for a re-add)."""
        self._retired.append(b)
        self._last[b.id] = snap
        self._last.move_to_end(b.id)
        while len(self._last) > MAX_REMEMBERED:
            self._last.popitem(last=False)

    def revive(self, b: Backend) -> None:
        """`b` is being added: if a backend of that id was removed in this run, go on from
        its counts."""
        snap = self._last.pop(b.id, None)
        if snap is not None:
            b.restore(snap)

    def fold(self) -> None:
        """Retired backends with nothing in flight add no more bytes: keep their sums only
        (call after the fast lane's counters have been harvested)."""
        keep = []
        for b in self._retired:
            if b.active:
                keep.append(b)
            else:
                self._folded_in += b.bytes_in - b.base_bytes_in
                self._folded_out += b.bytes_out - b.base_bytes_out
        self._retired = keep

    def bytes(self, current: Iterable[Backend]) -> tuple[int, int]:
        """(bytes in, bytes out) of this run, over current and removed backends."""
        bytes_in, bytes_out = self._folded_in, self._folded_out
        for group in (current, self._retired):
            for b in group:
                bytes_in += b.bytes_in - b.base_bytes_in
                bytes_out += b.bytes_out - b.base_bytes_out
        return bytes_in, bytes_out
