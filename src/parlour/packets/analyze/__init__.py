"""Reading captures back: frame decoding, Wireshark's TCP analysis and reassembly, application
dissectors (HTTP, Parlour chat), ICMP, filters, following streams, narration and the
sequence-number plot.

The entry points::

    from parlour.packets.analyze import analyze, iter_analysis
    result = analyze("capture.pcap")          # every packet, for small captures
    for pa in iter_analysis("big.pcap"): ...  # one packet at a time, constant memory
"""

from parlour.packets.analyze.dissect import Analysis, PacketAnalysis, analyze, iter_analysis

__all__ = ["Analysis", "PacketAnalysis", "analyze", "iter_analysis"]
