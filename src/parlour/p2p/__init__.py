"""Peer-to-peer file transfer over UDP: reliable, encrypted, concurrent (issue 14).

Layers (arrows point one way): ``wire`` (datagram format), ``crypto`` (keys),
``ranges``/``congestion`` (building blocks) -> ``connection`` -> ``sender``/``receiver``
(the sans-I/O protocol) ; ``relay`` (sans-I/O relay core) ; ``files`` (temp files, names,
resume state) ; ``endpoint`` (asyncio UDP adapter) -> ``manager`` (the API for clients).
See docs/design/p2p-transfer.md.
"""

from .connection import RelayInfo, TransferConfig
from .events import Reason
from .files import FileOffer, describe_file, safe_name
from .manager import TransferHandle, TransferManager, TransferResult
from .progress import Progress
from .relay import Relay, RelayConfig, ticket_for
from .relay_udp import RelayServer

__all__ = [
    "FileOffer",
    "Progress",
    "Reason",
    "Relay",
    "RelayConfig",
    "RelayInfo",
    "RelayServer",
    "TransferConfig",
    "TransferHandle",
    "TransferManager",
    "TransferResult",
    "describe_file",
    "safe_name",
    "ticket_for",
]
