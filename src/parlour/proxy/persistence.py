"""The proxy's statistics store, as the runtime uses it: the state to start from, saving
while running, and the figures of the other worker processes.

- `load_start_state`: the backends, operator states and settings to start with, and the
  counters carried from earlier runs. What the command line set wins; then, with
  `load_from = "previous"`, what the previous run saved; then the config file; then the
  defaults. The log says what came from where.
- `Persistence`: worker 0 writes the backend set and statistics (soon after every
  change, every `PERSIST_INTERVAL_S`, and at stop) and records up/down events; workers
  1..N-1 only read: they follow worker 0's backend set, operator states and settings
  (`follow`, every second), and publish their own counters for worker 0 to add up, which
  worker 0 reads back every `WORKER_STATS_INTERVAL_S` (`peers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, cast

from parlour.proxy.config import ProxyConfig, apply_setting_changes
from parlour.proxy.control import (
    BackendSnapshot,
    BackendSpec,
    ControlError,
    ProxySettings,
    TotalsSnapshot,
)
from parlour.proxy.pool import StateChange
from parlour.proxy.stats_merge import add_backend_counters

__all__ = [
    "PERSIST_INTERVAL_S",
    "WORKER_STATS_INTERVAL_S",
    "Persistence",
    "StartState",
    "StoreLike",
    "WorkerStatsStore",
    "load_start_state",
    "stored_settings",
]

log = logging.getLogger("parlour.proxy")

PERSIST_INTERVAL_S = 5.0
WORKER_STATS_INTERVAL_S = 1.0
FOLLOW_INTERVAL_S = 1.0

Items = list[tuple[BackendSpec, str]]


class StoreLike(Protocol):
    def load_backends(self) -> Items: ...
    def save_backends(self, items: Items) -> None: ...
    def load_settings(self) -> dict[str, object] | None: ...
    def save_settings(self, settings: ProxySettings) -> None: ...
    def save_snapshot(self, snaps: list[BackendSnapshot]) -> None: ...
    def load_snapshots(self) -> dict[str, BackendSnapshot]: ...
    def close(self) -> None: ...


class WorkerStatsStore(Protocol):
    """What multi-worker statistics need on top of `StoreLike` (`StatsStore` has it)."""

    def save_worker_totals(self, run: str, worker: int, totals: TotalsSnapshot) -> None: ...
    def load_worker_totals(self, run: str) -> list[TotalsSnapshot]: ...
    def take_previous_runs(self, run: str) -> dict[str, BackendSnapshot]: ...


def stored_settings(
    current: ProxySettings, saved: dict[str, object], keep: frozenset[str] = frozenset()
) -> ProxySettings:
    """`current` with the saved settings applied, except the names in `keep` (and names
    this version does not know). ControlError if a saved value is refused."""
    known = {f.name for f in dataclasses.fields(ProxySettings)}
    changes = {k: v for k, v in saved.items() if k in known and k not in keep}
    return apply_setting_changes(current, changes)


@dataclass
class StartState:
    """What a worker starts with."""

    backends: Items  # (spec, state) in order
    settings: ProxySettings
    snaps: dict[str, BackendSnapshot]  # counters of earlier runs, by backend id
    folded: list[str]  # ids whose snaps include other workers' earlier runs


def load_start_state(
    config: ProxyConfig,
    store: StoreLike | None,
    settings: ProxySettings,
    *,
    worker: int,
    run_id: str,
    carry: bool,
) -> StartState:
    """Where the starting state comes from (see the module doc). `carry`: this worker
    carries the earlier runs' counters (worker 0), folding in the other workers' rows."""
    c = config
    say = log.info if worker == 0 else log.debug
    specs: Items = [(b, "up") for b in c.backends]
    from_cli = "backends" in c.explicit
    origin = "the command line (--backend)" if from_cli else (c.path or "the defaults")
    previous = c.load_from == "previous"
    if previous and store is None:
        log.warning("load_from = previous needs a store (--store): starting from %s", origin)
    if store is None:
        say("backends: %d from %s", len(specs), origin)
        return StartState(specs, settings, {}, [])
    if previous:
        stored = store.load_backends()
        if from_cli:
            say(
                "backends: %d from the command line (--backend); load_from = previous: "
                "not used for backends",
                len(specs),
            )
        elif stored:
            specs = stored
            say("backends: %d from the previous run (%s)", len(specs), c.store)
        else:
            say("backends: %d from %s (no previous run in %s)", len(specs), origin, c.store)
        settings = _previous_settings(c, settings, store.load_settings(), say)
    else:
        say("backends: %d from %s", len(specs), origin)
    snaps = store.load_snapshots()
    folded: list[str] = []
    take = getattr(store, "take_previous_runs", None)
    if carry and take is not None:
        # the other workers' share of earlier runs joins worker 0's carried totals
        for bid, extra in take(run_id).items():
            snaps[bid] = add_backend_counters(snaps[bid], extra) if bid in snaps else extra
            folded.append(bid)
    return StartState(specs, settings, snaps, folded)


def _previous_settings(
    c: ProxyConfig,
    settings: ProxySettings,
    saved: dict[str, object] | None,
    say: Callable[..., None],
) -> ProxySettings:
    """load_from = previous: the previous run's settings, except those the command line
    set."""
    if not saved:
        say("settings: from %s (no previous run in %s)", c.path or "the defaults", c.store)
        return settings
    try:
        restored = stored_settings(settings, saved, c.explicit)
    except ControlError as exc:
        log.warning("ignoring stored settings: %s", exc.message)
        return settings
    keep = sorted({f.name for f in dataclasses.fields(ProxySettings)} & c.explicit)
    say(
        "settings: the previous run's (%s)%s",
        c.store,
        f", except {', '.join(keep)} from the command line" if keep else "",
    )
    return restored


class Persistence:
    """Saving and following, for one worker (see the module doc)."""

    def __init__(
        self,
        store: StoreLike | None,
        *,
        writer: bool,
        run_id: str,
        worker: int,
        workers: int,
        items: Callable[[], Items],
        snapshots: Callable[[], list[BackendSnapshot]],
        totals: Callable[[], TotalsSnapshot],
        follow: Callable[[Items, dict[str, object] | None], None],
    ) -> None:
        # worker 0 writes (`store`); the others only read and publish their totals
        self.store = store if writer else None
        self.reader = store if not writer else None
        self.run_id = run_id
        self.worker = worker
        self.workers = workers
        self._items = items
        self._snapshots = snapshots
        self._totals = totals
        self._follow = follow
        self._scheduled = False
        self.peers: list[TotalsSnapshot] = []  # the other workers' latest totals (worker 0)

    # ------------------------------------------------------------------ worker 0
    def save_settings(self, settings: ProxySettings) -> None:
        if self.store is not None:
            self.store.save_settings(settings)

    def soon(self) -> None:
        """Save the backend set and statistics once the current callback is done."""
        if self.store is None or self._scheduled:
            return
        self._scheduled = True
        try:
            asyncio.get_running_loop().call_soon(self.save_now)
        except RuntimeError:
            self.save_now()

    def save_now(self) -> None:
        self._scheduled = False
        if self.store is None:
            return
        try:
            self.store.save_backends(self._items())
            self.store.save_snapshot(self._snapshots())
        except Exception:
            log.exception("could not persist proxy statistics")

    def state_changed(self, change: StateChange) -> None:
        """A backend went up or down (or an operator changed its state): save soon, and
        record the health changes in the event log."""
        self.soon()
        record = getattr(self.store, "record_event", None)
        if record is not None and change.new in ("up", "down"):
            try:
                record(change.backend_id, change.new, change.reason, change.at)
            except Exception:
                log.exception("could not record the state change")

    def keep_snapshots(self, snaps: list[BackendSnapshot]) -> None:
        """Counters of backends not in this run's set, kept for a later one."""
        if self.store is not None and snaps:
            self.store.save_snapshot(snaps)

    # ------------------------------------------------------------------ tasks
    def tasks(self) -> list[Coroutine[Any, Any, None]]:
        """The loops this worker runs (the runtime starts and cancels them)."""
        loops: list[Coroutine[Any, Any, None]] = []
        if self.store is not None:
            loops.append(self._save_loop(self.store))
            if self.workers > 1 and hasattr(self.store, "load_worker_totals"):
                loops.append(self._peers_loop(cast("WorkerStatsStore", self.store)))
        if self.reader is not None:
            loops.append(self._follow_loop(self.reader))
            if hasattr(self.reader, "save_worker_totals"):
                loops.append(self._publish_loop(cast("WorkerStatsStore", self.reader)))
        return loops

    def stop(self) -> None:
        """The last save (worker 0), or the last totals (the others)."""
        if self.store is not None:
            self.save_now()
        if self.reader is not None and hasattr(self.reader, "save_worker_totals"):
            with contextlib.suppress(Exception):
                cast("WorkerStatsStore", self.reader).save_worker_totals(
                    self.run_id, self.worker, self._totals()
                )

    async def _save_loop(self, store: StoreLike) -> None:
        while True:
            await asyncio.sleep(PERSIST_INTERVAL_S)
            items, snaps = self._items(), self._snapshots()
            try:  # SQLite off the event loop thread (the store is thread-safe)
                await asyncio.to_thread(_write_store, store, items, snaps)
            except Exception:
                log.exception("could not persist proxy statistics")

    async def _publish_loop(self, store: WorkerStatsStore) -> None:
        """Workers 1..N-1: publish this worker's counters for worker 0 to add up."""
        while True:
            await asyncio.sleep(WORKER_STATS_INTERVAL_S)
            totals = self._totals()
            try:
                await asyncio.to_thread(store.save_worker_totals, self.run_id, self.worker, totals)
            except Exception:
                log.exception("could not save this worker's statistics")

    async def _peers_loop(self, store: WorkerStatsStore) -> None:
        """Worker 0: fetch the other workers' latest counters."""
        while True:
            await asyncio.sleep(WORKER_STATS_INTERVAL_S)
            try:
                self.peers = await asyncio.to_thread(store.load_worker_totals, self.run_id)
            except Exception:
                log.exception("could not read the other workers' statistics")

    async def _follow_loop(self, store: StoreLike) -> None:
        while True:
            await asyncio.sleep(FOLLOW_INTERVAL_S)
            try:
                items, saved = await asyncio.to_thread(
                    lambda: (store.load_backends(), store.load_settings())
                )
                self._follow(items, saved)
            except Exception:
                log.exception("could not follow worker 0's state")


def _write_store(store: StoreLike, items: Items, snaps: list[BackendSnapshot]) -> None:
    store.save_backends(items)
    store.save_snapshot(snaps)
