"""Active health checks (TCP connect or HTTP request), feeding the pool's rise/fall logic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import TYPE_CHECKING

from parlour.proxy.control import ProxySettings

if TYPE_CHECKING:
    from parlour.proxy.pool import Backend
    from parlour.proxy.upstreams import Upstreams

__all__ = ["check_backend", "check_now", "health_loop"]

log = logging.getLogger("parlour.proxy")


async def check_backend(
    host: str,
    port: int,
    s: ProxySettings,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> tuple[bool, str]:
    """One check: (ok, reason-if-not). With `tls` (TLS to backends) the handshake is part
    of the check, so a certificate that does not verify shows as the reason."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(s.health_timeout_s):
            if tls is not None:
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=server_name or host
                )
            else:
                reader, writer = await asyncio.open_connection(host, port)
            if s.health_kind == "http":
                writer.write(
                    f"GET {s.health_path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    "User-Agent: parlour-proxy-health\r\nConnection: close\r\n\r\n".encode()
                )
                line = await reader.readline()
                parts = line.split(b" ", 2)
                if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
                    return False, "health check: not an HTTP response"
                status = int(parts[1]) if parts[1].isdigit() else 0
                if status != s.health_expect_status:
                    return False, f"health check: status {status} (want {s.health_expect_status})"
        return True, ""
    except TimeoutError:
        return False, "health check timed out"
    except ssl.SSLError as exc:
        return False, f"health check: TLS: {exc.reason or exc}"
    except ConnectionRefusedError:
        return False, "health check: connection refused"
    except OSError as exc:
        return False, f"health check: {exc.strerror or exc}"
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _check_one(ups: Upstreams, b: Backend) -> None:
    ok, reason = await check_backend(
        b.spec.host,
        b.spec.port,
        ups.pool.settings,
        ups.backend_ssl,
        ups.backend_server_name(b) if ups.backend_ssl is not None else None,
    )
    ups.pool.check_result(b.id, ok, ups.clock(), reason)


async def check_now(ups: Upstreams, b: Backend) -> None:
    """Check `b` at once (a backend just added: it gets no traffic until this decides)."""
    if b.admin != "disabled":
        await _check_one(ups, b)


async def health_loop(ups: Upstreams) -> None:
    while True:
        targets = [b for b in ups.pool.all() if b.admin != "disabled"]
        if targets:
            await asyncio.gather(*(_check_one(ups, b) for b in targets))
        await asyncio.sleep(ups.pool.settings.health_interval_s)
