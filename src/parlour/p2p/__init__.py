"""Peer-to-peer file transfer over UDP: reliable, encrypted, concurrent (issue 14).

Layers (arrows point one way): ``wire`` (datagram format), ``crypto`` (keys),
``ranges``/``congestion`` (building blocks) -> ``connection`` -> ``sender``/``receiver``
(the sans-I/O protocol) ; ``relay`` (sans-I/O relay core) ; ``files`` (temp files, names,
resume state) ; ``endpoint`` (asyncio UDP adapter) -> ``manager`` (the API for clients).
See docs/design/p2p-transfer.md.
"""
