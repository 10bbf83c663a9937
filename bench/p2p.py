"""P2P file transfer throughput: Parlour's UDP protocol against aioquic and a TCP copy.

    python bench/p2p.py                       # 1 GiB, no loss; then 1 % and 5 % loss via the relay
    python bench/p2p.py --size 256M --quic-size 64M --lossy-size 64M

Every run has its receiver in a child process and its sender in this one (two cores, as two
clients would have); the relay of the lossy runs is a third process. Each receiver writes the
file into --dir (default /dev/shm, so the disk does not set the pace) and fsyncs it. Parlour's
receiver also checks the SHA-256 and every datagram's AEAD tag; the baselines only copy.

Printed: MB/s (10^6 bytes per second, from the sender's start to the receiver's verified
file), ratios against the baselines, and for the lossy runs the goodput and the
retransmission overhead (file bytes sent again / file size; wire bytes / file size).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import multiprocessing as mp
import os
import resource
import socket
import ssl
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from parlour.p2p.connection import RelayInfo
from parlour.p2p.files import FileOffer
from parlour.p2p.manager import TransferManager
from parlour.p2p.relay import RelayConfig, ticket_for

SECRET = b"bench-relay-secret-0123456789abc"
CTX = mp.get_context("fork")


def _loop_policy() -> str:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return "uvloop"
    except ImportError:
        return "asyncio"


def _parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def _children_cpu() -> float:
    """CPU seconds of the child processes waited for so far (user + system)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def make_file(directory: Path, size: int) -> tuple[Path, FileOffer]:
    path = directory / f"bench-{size}.bin"
    block = os.urandom(64 << 20)
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            piece = block[: min(left, len(block))]
            f.write(piece)
            digest.update(piece)
            left -= len(piece)
    return path, FileOffer(path.name, size, digest.digest())


# ----------------------------------------------------------------------------- parlour


def _p2p_receiver(pipe: Connection, offer: FileOffer, dest: str) -> None:
    _loop_policy()

    async def main() -> None:
        m = TransferManager(progress_interval=1.0)
        await m.start()
        pipe.send(m.address)
        tid, key, peer, relay = pipe.recv()
        info = RelayInfo(relay, ticket_for(SECRET, tid, 1)) if relay else None
        h = m.accept_file(
            offer, Path(dest), transfer_id=tid, key=key, peers=[] if relay else [peer], relay=info
        )
        r = await h.wait()
        if r.path is not None:
            r.path.unlink()
        pipe.send((r.ok, r.message))
        await m.close()

    asyncio.run(main())


def _relay_process(pipe: Connection, loss: float) -> None:
    _loop_policy()
    from parlour.p2p.testing import ImpairedRelayServer

    async def main() -> None:
        cfg = RelayConfig(
            rate_per_transfer=1e10,
            burst_per_transfer=64 << 20,
            total_rate=1e10,
            total_burst=64 << 20,
        )
        relay = await ImpairedRelayServer.start_impaired(
            SECRET, loss=loss, reorder=0.01, seed=5, config=cfg
        )
        pipe.send(relay.address)
        await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
        pipe.send((relay.dropped, relay.relay.stats.forwarded))
        relay.close()

    asyncio.run(main())


def run_parlour(path: Path, offer: FileOffer, dest: Path, loss: float | None) -> dict[str, Any]:
    relay_proc = relay_pipe = None
    relay_addr = None
    if loss is not None:
        relay_pipe, child = CTX.Pipe()
        relay_proc = CTX.Process(target=_relay_process, args=(child, loss))
        relay_proc.start()
        relay_addr = relay_pipe.recv()
    pipe, child = CTX.Pipe()
    c0 = _children_cpu()
    proc = CTX.Process(target=_p2p_receiver, args=(child, offer, str(dest)))
    proc.start()
    peer = pipe.recv()

    async def main() -> dict[str, Any]:
        m = TransferManager(progress_interval=1.0)
        await m.start()
        tid, key = os.urandom(8), os.urandom(32)
        pipe.send((tid, key, m.address, relay_addr))
        info = RelayInfo(relay_addr, ticket_for(SECRET, tid, 0)) if relay_addr else None
        t0 = time.perf_counter()
        p0 = time.process_time()
        h = m.send_file(
            path, offer, transfer_id=tid, key=key, peers=[] if relay_addr else [peer], relay=info
        )
        r = await h.wait()
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - p0
        ep = m.endpoint.stats
        await m.close()
        return {
            "ok": r.ok,
            "message": r.message,
            "seconds": elapsed,
            "resent": r.stats.data_bytes_resent,
            "wire": r.stats.wire_bytes_sent,
            "lost": r.stats.packets_lost,
            "datagrams": r.stats.datagrams_sent,
            "send_calls": ep.send_calls,
            "gso": m.endpoint.gso,
            "stats": r.stats,
            "cpu": cpu,
        }

    out = asyncio.run(main())
    ok, message = pipe.recv()
    proc.join()
    if relay_proc is None:
        out["cpu"] += _children_cpu() - c0  # the receiver's CPU (the relay is not counted)
    if not (out["ok"] and ok):
        print(f"  failed run: sender {out['message']!r}, receiver {message!r}, {out['stats']}")
    out["receiver"] = message
    if relay_pipe is not None and relay_proc is not None:
        relay_pipe.send("stop")
        out["relay_dropped"], out["relay_forwarded"] = relay_pipe.recv()
        relay_proc.join()
    return out


# ----------------------------------------------------------------------------- TCP


def _tcp_receiver(pipe: Connection, size: int, dest: str) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    pipe.send(srv.getsockname())
    conn, _ = srv.accept()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    target = Path(dest) / "tcp.bin"
    with target.open("wb") as f:
        got = 0
        while got < size:
            n = conn.recv_into(buf)
            if not n:
                break
            f.write(view[:n])
            got += n
        f.flush()
        os.fsync(f.fileno())
    conn.sendall(b"k")
    conn.close()
    srv.close()
    target.unlink()


def run_tcp(path: Path, size: int, dest: Path) -> tuple[float, float]:
    pipe, child = CTX.Pipe()
    c0 = _children_cpu()
    proc = CTX.Process(target=_tcp_receiver, args=(child, size, str(dest)))
    proc.start()
    addr = pipe.recv()
    t0 = time.perf_counter()
    p0 = time.process_time()
    with socket.create_connection(addr) as s, path.open("rb") as f:
        left = size
        while left:
            chunk = f.read(min(1 << 20, left))
            s.sendall(chunk)
            left -= len(chunk)
        s.recv(1)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - p0
    proc.join()
    return elapsed, cpu + _children_cpu() - c0


# ----------------------------------------------------------------------------- aioquic


def _cert(directory: Path) -> tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    c, k = directory / "quic-cert.pem", directory / "quic-key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(c), str(k)


def _quic_receiver(pipe: Connection, size: int, dest: str, cert: str, key: str) -> None:
    _loop_policy()
    from aioquic.asyncio import serve
    from aioquic.quic.configuration import QuicConfiguration

    async def main() -> None:
        done = asyncio.get_running_loop().create_future()
        target = Path(dest) / "quic.bin"
        f = target.open("wb")
        got = 0

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal got
            while got < size:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
            f.flush()
            os.fsync(f.fileno())
            writer.write(b"k")
            done.set_result(None)

        cfg = QuicConfiguration(is_client=False, alpn_protocols=["bench"])
        cfg.load_cert_chain(cert, key)
        server = await serve(
            "127.0.0.1", 0, configuration=cfg,
            stream_handler=lambda r, w: asyncio.ensure_future(handler(r, w)),
        )  # fmt: skip
        pipe.send(server._transport.get_extra_info("sockname")[:2])
        await done
        await asyncio.sleep(0.2)  # let the one-byte answer go out
        server.close()
        f.close()
        target.unlink()

    asyncio.run(main())


def run_quic(path: Path, size: int, dest: Path, tmp: Path) -> tuple[float, float]:
    from aioquic.asyncio import connect
    from aioquic.quic.configuration import QuicConfiguration

    cert, key = _cert(tmp)
    pipe, child = CTX.Pipe()
    c0 = _children_cpu()
    proc = CTX.Process(target=_quic_receiver, args=(child, size, str(dest), cert, key))
    proc.start()
    host, port = pipe.recv()

    async def main() -> tuple[float, float]:
        cfg = QuicConfiguration(is_client=True, alpn_protocols=["bench"])
        cfg.verify_mode = ssl.CERT_NONE
        async with connect(host, port, configuration=cfg) as client:
            reader, writer = await client.create_stream()
            quic = client._quic
            sid = writer.get_extra_info("stream_id")
            t0 = time.perf_counter()
            p0 = time.process_time()
            with path.open("rb") as f:
                left = size
                while left:
                    stream = quic._streams.get(sid)
                    # Keep at most 4 MiB queued (aioquic buffers without limit otherwise).
                    while stream and stream.sender._buffer_stop - stream.sender._buffer_start > (
                        4 << 20
                    ):
                        await asyncio.sleep(0.001)
                    chunk = f.read(min(1 << 20, left))
                    writer.write(chunk)
                    left -= len(chunk)
            await reader.readexactly(1)
            return time.perf_counter() - t0, time.process_time() - p0

    _loop_policy()
    elapsed, cpu = asyncio.run(main())
    proc.join()
    return elapsed, cpu + _children_cpu() - c0


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", default="1G", help="bytes for the no-loss runs (default 1G)")
    ap.add_argument("--quic-size", default=None, help="bytes for aioquic (default: --size)")
    ap.add_argument("--lossy-size", default="256M", help="bytes for the lossy runs")
    ap.add_argument("--loss", default="0,0.01,0.05", help="loss rates through the relay")
    ap.add_argument("--dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    ap.add_argument("--skip-quic", action="store_true")
    args = ap.parse_args()
    loop_name = _loop_policy()
    size = _parse_size(args.size)
    quic_size = _parse_size(args.quic_size) if args.quic_size else size
    lossy = _parse_size(args.lossy_size)
    load = os.getloadavg()[0]
    print(f"python {sys.version.split()[0]}, {loop_name}, load {load:.2f}, {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmpdir:
        tmp = Path(tmpdir)
        dest = tmp / "dest"
        dest.mkdir()
        path, offer = make_file(tmp, size)
        mb = size / 1e6
        r = run_parlour(path, offer, dest, None)
        ours = mb / r["seconds"]
        ours_cpu = mb / r["cpu"]
        print(
            f"parlour p2p  {mb:8.0f} MB  {r['seconds']:7.2f} s  {ours:7.1f} MB/s  "
            f"{r['cpu']:6.2f} CPU s  {ours_cpu:6.1f} MB/CPU-s  ({r['message']}; "
            f"{r['datagrams']} datagrams in {r['send_calls']} sends, gso={r['gso']}, "
            f"resent {r['resent']} B)"
        )
        tcp_s, tcp_cpu = run_tcp(path, size, dest)
        tcp = mb / tcp_s
        print(
            f"tcp copy     {mb:8.0f} MB  {tcp_s:7.2f} s  {tcp:7.1f} MB/s  "
            f"{tcp_cpu:6.2f} CPU s  {mb / tcp_cpu:6.1f} MB/CPU-s"
        )
        if not args.skip_quic:
            qpath, _ = (path, offer) if quic_size == size else make_file(tmp, quic_size)
            q_s, q_cpu = run_quic(qpath, quic_size, dest, tmp)
            qmb = quic_size / 1e6
            quic = qmb / q_s
            print(
                f"aioquic      {qmb:8.0f} MB  {q_s:7.2f} s  {quic:7.1f} MB/s  "
                f"{q_cpu:6.2f} CPU s  {qmb / q_cpu:6.1f} MB/CPU-s"
            )
            print(
                f"ratio parlour/aioquic {ours / quic:.1f}x wall clock, "
                f"{ours_cpu / (qmb / q_cpu):.1f}x per CPU second"
            )
        print(f"ratio parlour/tcp     {ours / tcp:.2f}x")
        path.unlink()
        lpath, loffer = make_file(tmp, lossy)
        for loss in (float(x) for x in args.loss.split(",")):
            r = run_parlour(lpath, loffer, dest, loss)
            good = lossy / 1e6 / r["seconds"]
            print(
                f"relay loss {loss:4.0%}  {lossy / 1e6:6.0f} MB  {r['seconds']:7.2f} s  "
                f"goodput {good:7.1f} MB/s  resent {r['resent'] / lossy:6.2%}  "
                f"wire/file {r['wire'] / lossy:5.3f}  relay dropped {r['relay_dropped']}  "
                f"({r['message']}; receiver: {r['receiver']})"
            )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
