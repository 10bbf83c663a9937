"""File transfer through the chat server's brokering, beside the raw library, in one run.

    python bench/p2p_chat.py                    # 256 MiB, 3 rounds of each, alternating
    python bench/p2p_chat.py --size 64M --rounds 2

* **raw library**: `TransferManager.send_file` in this process, `accept_file` in a child
  process, the transfer id, key and addresses handed over by a pipe (what a broker does).
* (CPU: both ends' processes, so MB per CPU-second does not depend on how busy the shared
  machine was; the brokered figure leaves out the sender's hashing, timed inside offer_file)
* **through the chat**: `parlour serve`'s server (the real `ChatServer`, memory store) in a
  child process; alice's `Client.offer_file` in this process, bob's `Client` in another child
  that accepts the offer as soon as its event arrives (no human in the loop). The clock starts
  when `offer_file` is called — the `/send-file` of the terminal — so the time to the first
  byte includes hashing the file, the endpoint probe, the offer, the event, the acceptance
  (with its probe), the grant and the transfer's handshake.

Both receivers write into --dir (default /dev/shm: the disk does not set the pace), check the
SHA-256 and fsync; both report progress at every batch (so "first byte" is when the first
bytes were written at the receiver). Times come from CLOCK_MONOTONIC, shared by the processes.
Printed per run: start -> first byte, first byte -> verified (MB/s of the transfer itself),
start -> verified (MB/s end to end), and the ratios of the brokered figures to the raw ones.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from parlour.client import Client, TransferOptions
from parlour.client import files as client_files
from parlour.p2p.files import FileOffer, describe_file
from parlour.p2p.manager import TransferManager
from parlour.server.testing import ChatTestServer

CTX = mp.get_context("fork")
PW = "bench-password"


def _loop_policy() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass


def _parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def make_file(directory: Path, size: int) -> Path:
    path = directory / f"bench-chat-{size}.bin"
    block = os.urandom(16 << 20)
    with path.open("wb") as f:
        left = size
        while left:
            piece = block[: min(left, len(block))]
            f.write(piece)
            left -= len(piece)
    return path


# ----------------------------------------------------------------------------- raw library


def _raw_receiver(pipe: Connection, offer: FileOffer, dest: str) -> None:
    _loop_policy()

    async def main() -> None:
        m = TransferManager(progress_interval=0.0)
        await m.start()
        pipe.send(m.address)
        tid, key, peer = pipe.recv()
        first: list[float] = []

        def progress(p: Any) -> None:
            if p.done and not first:
                first.append(time.monotonic())

        h = m.accept_file(
            offer, Path(dest), transfer_id=tid, key=key, peers=[peer], on_progress=progress
        )
        r = await h.wait()
        done = time.monotonic()
        if r.path is not None:
            r.path.unlink()
        pipe.send((r.ok, r.message, first[0] if first else done, done))
        await m.close()

    asyncio.run(main())


def run_raw(path: Path, offer: FileOffer, dest: Path) -> dict[str, float]:
    pipe, child = CTX.Pipe()
    c0, p0 = _children_cpu(), time.process_time()
    proc = CTX.Process(target=_raw_receiver, args=(child, offer, str(dest)))
    proc.start()
    peer = pipe.recv()

    async def main() -> float:
        m = TransferManager(progress_interval=0.0)
        await m.start()
        tid, key = os.urandom(8), os.urandom(32)
        pipe.send((tid, key, m.address))
        t0 = time.monotonic()
        h = m.send_file(path, offer, transfer_id=tid, key=key, peers=[peer])
        r = await h.wait()
        await m.close()
        if not r.ok:
            raise RuntimeError(f"raw transfer failed: {r.message}")
        return t0

    t0 = asyncio.run(main())
    ok, message, first, done = pipe.recv()
    proc.join()
    cpu = time.process_time() - p0 + _children_cpu() - c0
    if not ok:
        raise RuntimeError(f"raw receiver: {message}")
    return {"first": first - t0, "transfer": done - first, "total": done - t0, "cpu": cpu}


# ----------------------------------------------------------------------------- via the chat


def _server(pipe: Connection) -> None:
    _loop_policy()

    async def main() -> None:
        async with ChatTestServer() as server:
            await server.add_user("alice", PW)
            await server.add_user("bob", PW)
            pipe.send(server.port)
            await asyncio.get_running_loop().run_in_executor(None, pipe.recv)

    asyncio.run(main())


def _bob(pipe: Connection, port: int, dest: str) -> None:
    _loop_policy()

    async def main() -> None:
        opts = TransferOptions(bind="127.0.0.1", progress_interval=0.0)
        async with Client("127.0.0.1", port, transfers=opts) as bob:
            await bob.login("bob", PW)
            pipe.send("ready")
            async for event in bob.events():
                if event.name == "file_offer":
                    break
            seen = time.monotonic()
            first: list[float] = []

            def progress(p: Any) -> None:
                if p.done and not first:
                    first.append(time.monotonic())

            t = await bob.accept(event["offer"], dest, on_progress=progress)
            accepted = time.monotonic()
            r = await t.wait()
            done = time.monotonic()
            if r.path is not None:
                r.path.unlink()
            pipe.send(
                (r.ok, r.message, r.via_relay, seen, accepted, first[0] if first else done, done)
            )

    asyncio.run(main())


def run_chat(path: Path, dest: Path, port: int) -> dict[str, float]:
    pipe, child = CTX.Pipe()
    c0, p0 = _children_cpu(), time.process_time()
    proc = CTX.Process(target=_bob, args=(child, port, str(dest)))
    proc.start()
    assert pipe.recv() == "ready"

    hashed: list[float] = []
    describe = client_files.describe_file

    def timed_describe(p: Path) -> FileOffer:  # how long offer_file spends hashing
        h0 = time.monotonic()
        try:
            return describe(p)
        finally:
            hashed.append(time.monotonic() - h0)

    client_files.describe_file = timed_describe  # type: ignore[assignment]

    async def main() -> tuple[float, float]:
        opts = TransferOptions(bind="127.0.0.1", progress_interval=0.0)
        async with Client("127.0.0.1", port, transfers=opts) as alice:
            await alice.login("alice", PW)
            t0 = time.monotonic()
            t = await alice.offer_file("bob", path)  # the terminal's /send-file
            offered = time.monotonic()
            r = await t.wait()
            if not r.ok:
                raise RuntimeError(f"brokered transfer failed: {r.message}")
            return t0, offered

    try:
        t0, offered = asyncio.run(main())
    finally:
        client_files.describe_file = describe  # type: ignore[assignment]
    ok, message, via_relay, seen, accepted, first, done = pipe.recv()
    proc.join()
    cpu = time.process_time() - p0 + _children_cpu() - c0
    if not ok or via_relay:
        raise RuntimeError(f"bob: {message} (relay: {via_relay})")
    return {
        "hashing": hashed[0],
        "offered": offered - t0,
        "seen": seen - t0,
        "accepted": accepted - t0,
        "first": first - t0,
        "transfer": done - first,
        "total": done - t0,
        "cpu": cpu,
    }


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="256M")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    args = ap.parse_args()
    size = _parse_size(args.size)
    load = os.getloadavg()
    print(f"# p2p through the chat: {size / 1e6:.0f} MB, {args.rounds} rounds each, "
          f"load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]}")  # fmt: skip
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        src = make_file(base, size)
        dest = base / "in"
        dest.mkdir()
        h0 = time.monotonic()
        offer = describe_file(src)
        hashing = time.monotonic() - h0
        assert offer.sha256 == hashlib.sha256(src.read_bytes()).digest()
        print(f"hashing the file (SHA-256, page cache warm): {hashing * 1000:.0f} ms")
        spipe, schild = CTX.Pipe()
        server = CTX.Process(target=_server, args=(schild,))
        server.start()
        port = spipe.recv()
        raws: list[dict[str, float]] = []
        chats: list[dict[str, float]] = []
        try:
            for i in range(args.rounds):
                if i % 2:  # alternate the order: neither always runs on a warmer machine
                    chats.append(run_chat(src, dest, port))
                    raws.append(run_raw(src, offer, dest))
                else:
                    raws.append(run_raw(src, offer, dest))
                    chats.append(run_chat(src, dest, port))
                r, c = raws[-1], chats[-1]
                print(
                    f"round {i + 1}: raw first byte {r['first'] * 1000:6.1f} ms, "
                    f"{size / r['transfer'] / 1e6:6.1f} MB/s | chat first byte "
                    f"{c['first'] * 1000:6.1f} ms (hashed {c['hashing'] * 1000:.1f}, offer acked "
                    f"{c['offered'] * 1000:.1f}, seen {c['seen'] * 1000:.1f}, accepted "
                    f"{c['accepted'] * 1000:.1f}), "
                    f"{size / c['transfer'] / 1e6:6.1f} MB/s"
                )
        finally:
            spipe.send("stop")
            server.join()

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    print()
    print("| median of the rounds | raw library | through the chat | chat / raw |")
    print("| --- | ---: | ---: | ---: |")
    rf, cf = med(raws, "first"), med(chats, "first")
    print(f"| start -> first byte | {rf * 1000:.1f} ms | {cf * 1000:.1f} ms | {cf / rf:.1f}x |")
    rt, ct = size / med(raws, "transfer") / 1e6, size / med(chats, "transfer") / 1e6
    print(f"| first byte -> verified | {rt:.1f} MB/s | {ct:.1f} MB/s | {ct / rt:.2f} |")
    re_, ce = size / med(raws, "total") / 1e6, size / med(chats, "total") / 1e6
    print(f"| start -> verified | {re_:.1f} MB/s | {ce:.1f} MB/s | {ce / re_:.2f} |")
    rc = size / med(raws, "cpu") / 1e6
    cc = size / statistics.median(c["cpu"] - c["hashing"] for c in chats) / 1e6
    print(f"| MB per CPU-second, both ends (chat: less its hashing) | {rc:.1f} | {cc:.1f} | "
          f"{cc / rc:.2f} |")  # fmt: skip
    hm = med(chats, "hashing")
    print(
        f"before the first byte (medians, from /send-file): hashed {hm * 1000:.1f} ms, offer "
        f"acknowledged {med(chats, 'offered') * 1000:.1f} ms, seen by bob "
        f"{med(chats, 'seen') * 1000:.1f} ms, accepted {med(chats, 'accepted') * 1000:.1f} ms, "
        f"first byte {cf * 1000:.1f} ms; without the hashing: "
        f"{statistics.median(c['first'] - c['hashing'] for c in chats) * 1000:.1f} ms"
    )
    print(f"load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
