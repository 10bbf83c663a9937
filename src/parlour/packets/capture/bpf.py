"""Classic BPF programs for capture filters (pure: builds instructions, never opens a socket).

:func:`port_filter` produces the same program ``tcpdump -dd 'tcp port N'`` does — IPv4 (first
fragment only, any header length) and IPv6 (no extension headers) TCP segments whose source or
destination port is *N* — for a link layer whose network header starts *link_len* bytes into
the frame (14 for Ethernet and Linux loopback, 0 for raw IP). :func:`run_filter` interprets a
program in Python so the filter can be tested without root and without a kernel.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "Insn",
    "accept_all",
    "pack_program",
    "port_filter",
    "run_filter",
]

# opcode classes and modes used below (linux/filter.h)
BPF_LD_H_ABS = 0x28  # ldh [k]
BPF_LD_B_ABS = 0x30  # ldb [k]
BPF_LD_H_IND = 0x48  # ldh [x + k]
BPF_LDX_B_MSH = 0xB1  # ldxb 4*([k]&0xf)
BPF_JEQ_K = 0x15  # jeq #k
BPF_JSET_K = 0x45  # jset #k
BPF_RET_K = 0x06  # ret #k
BPF_RET_A = 0x16  # ret a (unused by our programs; kept for the interpreter)

_INSN = struct.Struct("=HBBI")


class Insn(NamedTuple):
    """One ``struct sock_filter``: opcode, jump-if-true, jump-if-false, constant."""

    code: int
    jt: int
    jf: int
    k: int


def accept_all(snaplen: int) -> list[Insn]:
    return [Insn(BPF_RET_K, 0, 0, snaplen)]


def port_filter(port: int, snaplen: int, link_len: int = 14) -> list[Insn]:
    """``tcp port PORT`` for frames whose network header starts at *link_len*."""
    if not 0 < port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")
    if link_len == 14:
        return _ethernet_port_filter(port, snaplen)
    if link_len == 0:
        return _raw_port_filter(port, snaplen)
    raise ValueError(f"unsupported link header length {link_len}")


def _ethernet_port_filter(port: int, snaplen: int) -> list[Insn]:
    # tcpdump -dd 'tcp port PORT' on an Ethernet interface, instruction for instruction
    return [
        Insn(BPF_LD_H_ABS, 0, 0, 12),  # 0: ethertype
        Insn(BPF_JEQ_K, 0, 6, 0x86DD),  # 1: IPv6?
        Insn(BPF_LD_B_ABS, 0, 0, 20),  # 2: IPv6 next header
        Insn(BPF_JEQ_K, 0, 15, 6),  # 3: TCP?
        Insn(BPF_LD_H_ABS, 0, 0, 54),  # 4: source port
        Insn(BPF_JEQ_K, 12, 0, port),  # 5
        Insn(BPF_LD_H_ABS, 0, 0, 56),  # 6: destination port
        Insn(BPF_JEQ_K, 10, 11, port),  # 7
        Insn(BPF_JEQ_K, 0, 10, 0x0800),  # 8: IPv4?
        Insn(BPF_LD_B_ABS, 0, 0, 23),  # 9: IPv4 protocol
        Insn(BPF_JEQ_K, 0, 8, 6),  # 10: TCP?
        Insn(BPF_LD_H_ABS, 0, 0, 20),  # 11: flags + fragment offset
        Insn(BPF_JSET_K, 6, 0, 0x1FFF),  # 12: not the first fragment: no TCP header
        Insn(BPF_LDX_B_MSH, 0, 0, 14),  # 13: x = IPv4 header length
        Insn(BPF_LD_H_IND, 0, 0, 14),  # 14: source port
        Insn(BPF_JEQ_K, 2, 0, port),  # 15
        Insn(BPF_LD_H_IND, 0, 0, 16),  # 16: destination port
        Insn(BPF_JEQ_K, 0, 1, port),  # 17
        Insn(BPF_RET_K, 0, 0, snaplen),  # 18: accept
        Insn(BPF_RET_K, 0, 0, 0),  # 19: drop
    ]


def _raw_port_filter(port: int, snaplen: int) -> list[Insn]:
    # the same test for raw IP frames (no link header): the version nibble picks the family
    return [
        Insn(BPF_LD_B_ABS, 0, 0, 0),  # 0: version/IHL
        Insn(0x54, 0, 0, 0xF0),  # 1: and #0xf0
        Insn(BPF_JEQ_K, 0, 6, 0x60),  # 2: IPv6?
        Insn(BPF_LD_B_ABS, 0, 0, 6),  # 3: next header
        Insn(BPF_JEQ_K, 0, 15, 6),  # 4: TCP?
        Insn(BPF_LD_H_ABS, 0, 0, 40),  # 5: source port
        Insn(BPF_JEQ_K, 12, 0, port),  # 6
        Insn(BPF_LD_H_ABS, 0, 0, 42),  # 7: destination port
        Insn(BPF_JEQ_K, 10, 11, port),  # 8
        Insn(BPF_JEQ_K, 0, 10, 0x40),  # 9: IPv4?
        Insn(BPF_LD_B_ABS, 0, 0, 9),  # 10: protocol
        Insn(BPF_JEQ_K, 0, 8, 6),  # 11: TCP?
        Insn(BPF_LD_H_ABS, 0, 0, 6),  # 12: flags + fragment offset
        Insn(BPF_JSET_K, 6, 0, 0x1FFF),  # 13
        Insn(BPF_LDX_B_MSH, 0, 0, 0),  # 14: x = header length
        Insn(BPF_LD_H_IND, 0, 0, 0),  # 15: source port
        Insn(BPF_JEQ_K, 2, 0, port),  # 16
        Insn(BPF_LD_H_IND, 0, 0, 2),  # 17: destination port
        Insn(BPF_JEQ_K, 0, 1, port),  # 18
        Insn(BPF_RET_K, 0, 0, snaplen),  # 19: accept
        Insn(BPF_RET_K, 0, 0, 0),  # 20: drop
    ]


def pack_program(program: Sequence[Insn]) -> bytes:
    """The instructions as the kernel's ``struct sock_filter`` array (native byte order)."""
    if not 0 < len(program) <= 4096:
        raise ValueError(f"a BPF program has 1 to 4096 instructions, not {len(program)}")
    return b"".join(_INSN.pack(*insn) for insn in program)


def run_filter(program: Sequence[Insn], packet: bytes) -> int:
    """Run *program* on *packet* like the kernel does; returns the bytes to keep (0: drop).

    Supports the instructions this module emits. Loads past the end of the packet drop it,
    as in the kernel.
    """
    a = x = 0
    pc = 0
    n = len(packet)
    while pc < len(program):
        code, jt, jf, k = program[pc]
        pc += 1
        if code in (BPF_LD_H_ABS, BPF_LD_H_IND):
            off = k + (x if code == BPF_LD_H_IND else 0)
            if off + 2 > n:
                return 0
            a = int.from_bytes(packet[off : off + 2], "big")
        elif code == BPF_LD_B_ABS:
            if k >= n:
                return 0
            a = packet[k]
        elif code == BPF_LDX_B_MSH:
            if k >= n:
                return 0
            x = 4 * (packet[k] & 0x0F)
        elif code == 0x54:  # and #k
            a &= k
        elif code == BPF_JEQ_K:
            pc += jt if a == k else jf
        elif code == BPF_JSET_K:
            pc += jt if a & k else jf
        elif code == BPF_RET_K:
            return k
        elif code == BPF_RET_A:
            return a
        else:
            raise ValueError(f"unsupported BPF opcode 0x{code:02x}")
    raise ValueError("BPF program fell off its end")
