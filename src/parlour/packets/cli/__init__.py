"""``parlour packets`` commands (thin click adapters over the subpackages)."""

from parlour.packets.cli.main import packets

__all__ = ["packets"]
