"""Impaired networks for tests and the benchmark (never for production).

:class:`ImpairedRelayServer` forwards like the real relay, but drops a fraction of the
datagrams and holds some back for a few milliseconds so that they arrive out of order, with a
seeded random generator so a run can be repeated. :class:`FilteredManager` is a transfer
manager whose socket drops what a filter refuses (a firewall, a pulled cable, a stall).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from .endpoint import Batch
from .manager import TransferManager
from .relay import Address, RelayConfig
from .relay_udp import RelayServer

__all__ = ["FilteredManager", "ImpairedRelayServer"]


class FilteredManager(TransferManager):
    """A transfer manager whose socket takes only what ``allow(data, addr)`` lets through
    (the rest is dropped, as a firewall or a cut cable would); ``dropped`` counts them."""

    def __init__(self, allow: Callable[[memoryview, Address], bool], **kw: Any) -> None:
        super().__init__(**kw)
        self.allow = allow
        self.dropped = 0

    def _on_batch(self, batch: Batch) -> None:
        kept = [(data, addr) for data, addr in batch if self.allow(data, addr)]
        self.dropped += len(batch) - len(kept)
        if kept:
            super()._on_batch(kept)


class ImpairedRelayServer(RelayServer):
    def __init__(
        self,
        secret: bytes,
        config: RelayConfig | None = None,
        *,
        loss: float = 0.0,
        reorder: float = 0.0,
        reorder_delay: float = 0.003,
        seed: int = 1,
    ) -> None:
        super().__init__(secret, config)
        self.loss = loss
        self.reorder = reorder
        self.reorder_delay = reorder_delay
        self.rng = random.Random(seed)
        self.dropped = 0
        self.reordered = 0

    @classmethod
    async def start_impaired(
        cls,
        secret: bytes,
        *,
        host: str = "127.0.0.1",
        loss: float = 0.0,
        reorder: float = 0.0,
        seed: int = 1,
        config: RelayConfig | None = None,
    ) -> ImpairedRelayServer:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(
            lambda: cls(secret, config, loss=loss, reorder=reorder, seed=seed),
            local_addr=(host, 0),
        )
        return proto

    def forward(self, data: bytes, dest: Address) -> None:
        rng = self.rng
        if data[0] in (0x11, 0x12) and rng.random() < self.loss:
            self.dropped += 1
            return
        if self.reorder and rng.random() < self.reorder:
            self.reordered += 1
            self._loop.call_later(self.reorder_delay, super().forward, data, dest)
            return
        super().forward(data, dest)
