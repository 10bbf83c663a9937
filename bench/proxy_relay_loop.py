"""In-process loop: keep-alive requests and responses through the HTTP relay, no sockets.

Drives `HttpClient`/`HttpUpstream` with fake transports — a wrk-shaped GET in, an
nginx-shaped 200 out — so only the relay's Python work is timed (no syscalls, no event
loop wake-ups, no other processes). Prints CPU µs of Python per proxied request (best
of --repeat runs); with --profile, a cProfile listing of one run.

    .venv/bin/python bench/proxy_relay_loop.py [--requests 100000] [--repeat 5] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import time

from parlour.proxy.config import ProxyConfig
from parlour.proxy.control import BackendSpec
from parlour.proxy.http_relay import HttpClient, HttpUpstream
from parlour.proxy.runtime import ProxyRuntime
from parlour.transports.testing import CallCountingTransport

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"  # what wrk sends
BODY = b"hello from backend\n"
RESPONSE = (  # what nginx answers for a small static file
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sat, 21 Nov 2026 21:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n"
    b"Last-Modified: Sat, 21 Nov 2026 20:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "6739a0c0-13"\r\nAccept-Ranges: bytes\r\n\r\n%b' % (len(BODY), BODY)
)


def setup(
    backends: int = 2,
) -> tuple[HttpClient, CallCountingTransport, list[CallCountingTransport]]:
    """A client connection and `backends` pooled upstream connections, on transports that
    only count what is written (a write costs two additions, as little as can be)."""
    rt = ProxyRuntime(ProxyConfig(admin_port=None), admin=False, persist=False)
    uptrs: list[CallCountingTransport] = []
    for i in range(backends):
        b = rt.pool.add(BackendSpec("127.0.0.1", 9000 + i), rt.clock())
        up = HttpUpstream(rt.upstreams, b)
        uptr = CallCountingTransport()
        up.connection_made(uptr)
        rt.upstreams.idle[b.id] = [up]
        uptrs.append(uptr)
    client = HttpClient(rt.upstreams)
    ctr = CallCountingTransport(("127.0.0.1", 40000))
    client.connection_made(ctr)
    return client, ctr, uptrs


def run(client: HttpClient, n: int) -> float:
    """CPU seconds (this thread's: steadier than wall time on a shared machine) for n
    request/response round trips through the relay."""
    feed = client.data_received
    t0 = time.thread_time()
    for _ in range(n):
        feed(REQUEST)
        up = client.upstream
        assert up is not None, "request was not bound to a pooled upstream"
        up.data_received(RESPONSE)
    return time.thread_time() - t0


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    client, ctr, uptrs = setup()
    run(client, 1000)  # warm up
    assert not client.closed and ctr.writes == 1000, (client.closed, ctr.writes)
    gc.freeze()  # as the proxy worker does after start-up
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run(client, args.requests)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    best = min(run(client, args.requests) for _ in range(args.repeat))
    per = best / args.requests * 1e6
    print(f"relay Python work: {per:.2f} µs/request (best of {args.repeat} x {args.requests})")
    print(f"client writes/request: {ctr.writes / (1000 + args.repeat * args.requests):.2f}")
    print(f"upstream writes/request: {sum(t.writes for t in uptrs) / ctr.writes:.2f}")


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
