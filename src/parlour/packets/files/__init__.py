"""Capture files: pcap and pcapng writers and readers, the record they exchange, format
detection. Builds on :mod:`parlour.packets.wire` only."""
