"""ICMP and ICMPv6 in the packet list, as tshark 4.0 writes them (pure).

``Destination unreachable (Port unreachable)``, ``Echo (ping) request  id=0x4242,
seq=1/256, ttl=64`` and, for a reply, `` (request in 287)``: tshark pads the ICMPv4 type to 20
characters, shows the sequence number in both byte orders and matches replies to requests on
its single pass (a request cannot name its reply, which comes later). The type and code names
are tshark's.
"""

from __future__ import annotations

__all__ = ["IcmpMatcher", "icmp_info", "icmpv6_info", "quote_cut"]

_ICMP_TYPES = {
    0: "Echo (ping) reply", 1: "Reserved", 2: "Reserved", 3: "Destination unreachable",
    4: "Source quench (flow control)", 5: "Redirect", 6: "Alternate host address",
    8: "Echo (ping) request", 9: "Router advertisement", 10: "Router solicitation",
    11: "Time-to-live exceeded", 12: "Parameter problem", 13: "Timestamp request",
    14: "Timestamp reply", 15: "Information request", 16: "Information reply",
    17: "Address mask request", 18: "Address mask reply", 19: "Reserved (for security)",
    30: "Traceroute", 31: "Datagram Conversion Error", 32: "Mobile Host Redirect",
    33: "IPv6 Where-Are-You", 34: "IPv6 I-Am-Here", 35: "Mobile Registration Request",
    36: "Mobile Registration Reply", 37: "Domain Name Request", 38: "Domain Name Reply",
    39: "SKIP", 40: "Photuris", 41: "Experimental mobility protocols",
    42: "Extended Echo request", 43: "Extended Echo reply",
}  # fmt: skip
_ICMP_CODES: dict[int, dict[int, str]] = {
    3: {
        0: "Network unreachable", 1: "Host unreachable", 2: "Protocol unreachable",
        3: "Port unreachable", 4: "Fragmentation needed", 5: "Source route failed",
        6: "Destination network unknown", 7: "Destination host unknown",
        8: "Source host isolated", 9: "Network administratively prohibited",
        10: "Host administratively prohibited", 11: "Network unreachable for TOS",
        12: "Host unreachable for TOS", 13: "Communication administratively filtered",
        14: "Host precedence violation", 15: "Precedence cutoff in effect",
    },
    5: {0: "Redirect for network", 1: "Redirect for host", 2: "Redirect for TOS and network",
        3: "Redirect for TOS and host"},
    6: {0: "Alternate address for host"},
    9: {0: "Normal router advertisement", 16: "Does not route common traffic"},
    11: {0: "Time to live exceeded in transit", 1: "Fragment reassembly time exceeded"},
    12: {0: "Pointer indicates the error", 1: "Required option missing", 2: "Bad length"},
    40: {0: "Bad SPI", 1: "Authentication Failed", 2: "Decompression Failed",
         3: "Decryption Failed", 4: "Need Authentication", 5: "Need Authorization"},
    42: {0: "No error"},
    43: {0: "No error", 1: "Malformed Query", 2: "No Such Interface", 3: "No Such Table Entry",
         4: "Multiple Interfaces Satisfy Query"},
}  # fmt: skip
#: types whose second word is an identifier and a sequence number
_ICMP_ID_SEQ = frozenset({0, 8, 13, 14, 15, 16, 17, 18})

_ICMP6_TYPES = {
    1: "Destination Unreachable", 2: "Packet Too Big", 3: "Time Exceeded",
    4: "Parameter Problem", 100: "Private experimentation", 101: "Private experimentation",
    127: "Reserved for expansion of ICMPv6 error messages", 128: "Echo (ping) request",
    129: "Echo (ping) reply", 130: "Multicast Listener Query", 131: "Multicast Listener Report",
    132: "Multicast Listener Done", 133: "Router Solicitation", 134: "Router Advertisement",
    135: "Neighbor Solicitation", 136: "Neighbor Advertisement", 137: "Redirect",
    138: "Router Renumbering", 139: "Node Information Query", 140: "Node Information Reply",
    141: "Inverse Neighbor Discovery Solicitation",
    142: "Inverse Neighbor Discovery Advertisement",
    143: "Multicast Listener Report Message v2", 144: "Home Agent Address Discovery Request",
    145: "Home Agent Address Discovery Reply", 146: "Mobile Prefix Solicitation",
    147: "Mobile Prefix Advertisement", 148: "Certification Path Solicitation",
    149: "Certification Path Advertisement", 150: "Experimental Mobility",
    151: "Multicast Router Advertisement", 152: "Multicast Router Solicitation",
    153: "Multicast Router Termination", 154: "FMIPv6", 155: "RPL Control",
    156: "Locator Update", 157: "Duplicate Address Request",
    158: "Duplicate Address Confirmation", 159: "MPL Control Message",
    160: "Extended Echo request", 161: "Extended Echo reply", 200: "Private experimentation",
    201: "Private experimentation",
    255: "Reserved for expansion of ICMPv6 informational messages",
}  # fmt: skip
_ICMP6_CODES: dict[int, tuple[dict[int, str], str | None]] = {
    1: ({0: "no route to destination", 1: "Administratively prohibited",
         2: "Beyond scope of source address", 3: "Address unreachable", 4: "Port unreachable",
         5: "Source address failed ingress/egress policy", 6: "Reject route to destination",
         7: "Error in Source Routing Header"}, None),
    3: ({0: "hop limit exceeded in transit", 1: "fragment reassembly time exceeded"},
        "Unknown ({})"),
    4: ({0: "erroneous header field encountered",
         1: "unrecognized Next Header type encountered",
         2: "unrecognized IPv6 option encountered",
         3: "IPv6 First Fragment has incomplete IPv6 Header Chain"}, "Unknown ({})"),
    160: ({0: "No error"}, "Unknown ({})"),
    161: ({0: "No error", 1: "Malformed Query", 2: "No Such Interface",
           3: "No Such Table Entry", 4: "Multiple Interfaces Satisfy Query"}, "Unknown ({})"),
}  # fmt: skip

#: (version, address pair, id, seq) -> request frame, reply frame (0 until matched)
_Key = tuple[int, frozenset[str], int, int]


class IcmpMatcher:
    """Echo requests waiting for replies (tshark's ICMP transactions, first pass only)."""

    def __init__(self) -> None:
        self._open: dict[_Key, list[int]] = {}

    def request(self, key: _Key, frame: int) -> None:
        self._open[key] = [frame, 0]
        if len(self._open) > 65536:  # bounded: forget the oldest unanswered requests
            for old in list(self._open)[:16384]:
                del self._open[old]

    def reply(self, key: _Key, frame: int) -> int:
        """The request frame this reply answers, or 0."""
        trans = self._open.get(key)
        if trans is None or trans[1]:
            return 0
        trans[1] = frame
        return trans[0]


def icmp_info(icmp: bytes, ttl: int, src: str, dst: str, frame: int, matcher: IcmpMatcher) -> str:
    """The Info column of an ICMPv4 message (*icmp* from its type byte on)."""
    if len(icmp) < 2:
        return "[Packet size limited during capture]" if icmp else ""
    kind, code = icmp[0], icmp[1]
    info = f"{_ICMP_TYPES.get(kind, 'Unknown ICMP (obsolete or malformed?)'):<20}"
    codes = _ICMP_CODES.get(kind)
    if codes is not None:
        info += f" ({codes.get(code, f'Unknown code: {code}')})"
    if kind in _ICMP_ID_SEQ:
        if len(icmp) < 8:
            return info + "[Packet size limited during capture]"
        ident = int.from_bytes(icmp[4:6], "big")
        seq = int.from_bytes(icmp[6:8], "big")
        seq_le = int.from_bytes(icmp[6:8], "little")
        info += f" id=0x{ident:04x}, seq={seq}/{seq_le}, ttl={ttl}"
        if kind in (0, 8):
            key = (4, frozenset((src, dst)), ident, seq)
            if kind == 8:
                matcher.request(key, frame)
            else:
                found = matcher.reply(key, frame)
                if found:
                    info += f" (request in {found})"
    return info


def icmpv6_info(
    icmp: bytes, hop_limit: int, src: str, dst: str, frame: int, matcher: IcmpMatcher
) -> str:
    """The Info column of an ICMPv6 message (*icmp* from its type byte on)."""
    if len(icmp) < 2:
        return "[Packet size limited during capture]" if icmp else ""
    kind, code = icmp[0], icmp[1]
    info = _ICMP6_TYPES.get(kind, f"Unknown ({kind})")
    found_codes = _ICMP6_CODES.get(kind)
    if found_codes is not None:
        names, unknown = found_codes
        info += f" ({names.get(code, unknown.format(code) if unknown else 'Unknown')})"
    if kind in (128, 129):
        if len(icmp) < 8:
            return info + "[Packet size limited during capture]"
        ident = int.from_bytes(icmp[4:6], "big")
        seq = int.from_bytes(icmp[6:8], "big")
        info += f" id=0x{ident:04x}, seq={seq}, hop limit={hop_limit}"
        key = (6, frozenset((src, dst)), ident, seq)
        if kind == 128:
            matcher.request(key, frame)
        else:
            req = matcher.reply(key, frame)
            if req:
                info += f" (request in {req})"
    return info


_V4_ERRORS = frozenset({3, 4, 5, 11, 12})
_V6_ERRORS = frozenset({1, 2, 3, 4})


def quote_cut(icmp: bytes, version: int) -> bool:
    """Whether the snap length cut an ICMP error inside the headers of the packet it quotes
    (tshark then stops with "[Packet size limited during capture]")."""
    if len(icmp) < 8 or icmp[0] not in (_V4_ERRORS if version == 4 else _V6_ERRORS):
        return False
    inner = icmp[8:]
    if version == 4:
        if not inner:
            return True
        hlen = (inner[0] & 0x0F) * 4
        if len(inner) < max(hlen, 20):
            return True
        proto = inner[9]
    else:
        hlen = 40
        if len(inner) < 40:
            return True
        proto = inner[6]
    need = {6: 16, 17: 8}.get(proto, 0)
    return len(inner) < hlen + need
