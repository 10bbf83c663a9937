"""CPU per datagram of the P2P protocol itself, in one process, no sockets.

    python bench/p2p_cpu.py [--size 200M]

A sender and a receiver connection (sans-I/O) pass datagrams hand to hand in batches of up
to 64, the way the UDP endpoint delivers them; file blocks come from memory and writes are
confirmed at once. Printed: µs of CPU per data datagram on each side (time.process_time, so
other load on the machine matters less than for bench/p2p.py), and for scale the cost of the
bare ChaCha20-Poly1305 call on a full datagram.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from parlour.p2p.events import ReadRequest, ReadyToVerify, WriteData
from parlour.p2p.receiver import ReceiverConnection
from parlour.p2p.sender import SenderConnection

A, B = ("10.0.0.1", 1), ("10.0.0.2", 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=200 << 20)
    args = ap.parse_args()
    block = os.urandom(1 << 20)
    size = args.size - args.size % len(block)
    digest = hashlib.sha256()
    for _ in range(size // len(block)):
        digest.update(block)
    common = dict(transfer_id=b"benchcpu", key=bytes(32), size=size, sha256=digest.digest())
    s = SenderConnection(candidates=[B], now=0.0, **common)  # type: ignore[arg-type]
    r = ReceiverConnection(candidates=[A], now=0.0, **common)  # type: ignore[arg-type]
    now = 0.0
    cpu = {"send": 0.0, "recv": 0.0}
    data_packets = 0
    done = False
    while not done:
        now += 0.0005  # the fake clock: 0.5 ms per round
        t0 = time.process_time()
        for ev in s.events():
            if isinstance(ev, ReadRequest):
                s.provide_data(ev.offset, block[: ev.length], now)
        if (t := s.timer()) is not None and t <= now:
            s.handle_timer(now)
        out = s.datagrams_to_send(now)
        t1 = time.process_time()
        cpu["send"] += t1 - t0
        data_packets += sum(1 for d, _ in out if len(d) > 1000)
        for i in range(0, len(out), 64):
            for d, _ in out[i : i + 64]:
                r.receive_datagram(d, A, now)
            for ev in r.events():
                if isinstance(ev, WriteData):
                    r.data_written(ev.offset, len(ev.data), now)
                elif isinstance(ev, ReadyToVerify):
                    r.finish(now)
        if (t := r.timer()) is not None and t <= now:
            r.handle_timer(now)
        back = r.datagrams_to_send(now)
        t2 = time.process_time()
        cpu["recv"] += t2 - t1
        for d, _ in back:
            s.receive_datagram(d, B, now)
        cpu["send"] += time.process_time() - t2
        done = s.result is not None and r.result is not None
    aead = ChaCha20Poly1305(os.urandom(32))
    payload, nonce = os.urandom(1201), os.urandom(12)
    t0 = time.process_time()
    for _ in range(100_000):
        aead.encrypt(nonce, payload, b"h" * 15)
    aead_us = (time.process_time() - t0) / 100_000 * 1e6
    print(f"{size / 1e6:.0f} MB, {data_packets} data datagrams, results {s.result} {r.result}")
    for side, seconds in cpu.items():
        per = seconds / data_packets * 1e6
        print(f"{side:5s} {per:5.2f} us CPU per datagram  (-> {1194 / per:6.1f} MB/s per core)")
    print(f"bare ChaCha20-Poly1305 call, 1201 bytes: {aead_us:.2f} us")


if __name__ == "__main__":
    main()
