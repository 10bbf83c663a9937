"""Issue 11, "smaller" list: Retry-After on 503s, hiding the backend's Server header,
absolute-form targets, HTTP/1.0 with chunked framing, client-sent Forwarded/X-Real-IP,
and one message per setting error. Runs in both data planes."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer
from proxy_helpers import BackendFactory, ProxyFactory, raw_exchange
from raw_backend import TIMEOUT, RawBackendFactory, Req, client, ok, read_response

from parlour.proxy.admin import create_admin_app
from parlour.proxy.config import ConfigError, ProxyConfig, load_config
from parlour.proxy.control import BackendSpec, ControlError
from parlour.proxy.runtime import ProxyRuntime

TOKEN = "small-fixes-token"


def head_of(out: bytes) -> dict[str, str]:
    lines = out.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    return {
        k.decode().lower(): v.decode().strip() for k, _, v in (x.partition(b":") for x in lines)
    }


# ------------------------------------------------------------------ Retry-After


async def test_503_says_when_to_retry(backends: BackendFactory, proxy: ProxyFactory) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], health_interval_s=2.5)
    rt.disable_backend(a.spec.id)
    out = await raw_exchange(rt.listen_port or 0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 503")
    assert head_of(out)["retry-after"] == "3"  # the next health check may bring one back


async def test_busy_503_says_retry_in_a_second(
    raw_backends: RawBackendFactory, proxy: ProxyFactory
) -> None:
    hold: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def answer(req: Req) -> bytes | None:
        if req.url == b"/slow":
            hold.add_done_callback(lambda _: req.conn.write(ok(b"slow")))
            return None
        return ok(b"fast")

    a = await raw_backends("a", answer)
    rt = await proxy([BackendSpec("127.0.0.1", a.port, max_conns=1)], max_queue=0)
    async with client(rt.listen_port or 0) as (r, w):
        w.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await a.until(lambda: any(q.url == b"/slow" for q in a.requests))
        out = await raw_exchange(rt.listen_port or 0, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 503") and head_of(out)["retry-after"] == "1"
        hold.set_result(None)
        assert (await read_response(r)).body == b"slow"


# ------------------------------------------------------------------ Server header


async def test_backend_server_header_can_be_hidden(
    raw_backends: RawBackendFactory, proxy: ProxyFactory
) -> None:
    a = await raw_backends("a", lambda req: ok(b"hi", b"Server: SecretServer/1.2.3\r\n"))
    rt = await proxy([a.spec])
    port = rt.listen_port or 0
    request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert head_of(await raw_exchange(port, request))["server"] == "SecretServer/1.2.3"
    rt.update_settings(hide_server_header=True)
    for _ in range(2):  # (a pooled connection and a fresh one)
        hidden = head_of(await raw_exchange(port, request))
        assert "server" not in hidden and hidden["via"] == "1.1 parlour"


# ------------------------------------------------------------------ absolute-form


@pytest.mark.parametrize(
    ("target", "path", "host"),
    [
        (b"http://evil.example/a/b?q=1", "/a/b?q=1", "evil.example"),
        (b"http://evil.example:8080", "/", "evil.example:8080"),
        (b"HTTPS://Evil.Example/x", "/x", "Evil.Example"),
    ],
)
async def test_absolute_form_becomes_origin_form_with_its_own_host(
    backends: BackendFactory, proxy: ProxyFactory, target: bytes, path: str, host: str
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    out = await raw_exchange(
        rt.listen_port or 0,
        b"GET %b HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n" % target,
    )
    assert out.startswith(b"HTTP/1.1 200")
    (seen,) = a.seen
    assert seen.path_qs == path and seen.url.path == path.split("?")[0]
    assert seen.headers.getall("Host") == [host]  # RFC 9112 §3.2.2: the target's authority
    assert a.headers[0]["X-Forwarded-Host"] == host


@pytest.mark.parametrize(
    "target",
    [b"http://user:pw@evil.example/", b"ftp://evil.example/", b"http:///x", b"http://ev il/"],
)
async def test_bad_absolute_forms_are_refused(
    backends: BackendFactory, proxy: ProxyFactory, target: bytes
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    out = await raw_exchange(rt.listen_port or 0, b"GET %b HTTP/1.1\r\nHost: x\r\n\r\n" % target)
    assert out.startswith(b"HTTP/1.1 400") and a.seen == []


# ------------------------------------------------------------------ HTTP/1.0 + chunked


async def test_http10_request_with_chunked_framing_closes_after_its_answer(
    backends: BackendFactory, proxy: ProxyFactory
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec])
    async with client(rt.listen_port or 0) as (r, w):
        # (the backend answers "/" with a Content-Length: the client could keep the
        # connection; RFC 9112 §6.1 says the framing is faulty: answer, then close)
        w.write(
            b"POST / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), TIMEOUT)
        rest = await asyncio.wait_for(r.read(), TIMEOUT)
    assert head.startswith(b"HTTP/1.0 200") and b"Connection: close" in head
    assert rest == b"a" and len(a.seen) == 1


async def test_http10_response_with_chunked_framing_is_not_reused(
    raw_backends: RawBackendFactory, proxy: ProxyFactory
) -> None:
    chunked10 = (
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n"
    )
    a = await raw_backends("a", lambda req: chunked10)
    rt = await proxy([a.spec])
    for _ in range(2):
        async with client(rt.listen_port or 0) as (r, w):
            w.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await read_response(r)).body == b"hi"
    assert [c.nreq for c in a.used_conns()] == [1, 1]  # a fresh upstream connection each


# ------------------------------------------------------------------ Forwarded, X-Real-IP


@pytest.mark.parametrize("trusted", [False, True])
async def test_client_forwarded_and_x_real_ip_pass_only_from_trusted_peers(
    backends: BackendFactory, proxy: ProxyFactory, trusted: bool
) -> None:
    a = await backends("a")
    rt = await proxy([a.spec], trust_forwarded=trusted)
    out = await raw_exchange(
        rt.listen_port or 0,
        b"GET / HTTP/1.1\r\nHost: x\r\nForwarded: for=6.6.6.6;proto=https\r\n"
        b"X-Real-IP: 6.6.6.6\r\nConnection: close\r\n\r\n",
    )
    assert out.startswith(b"HTTP/1.1 200")
    (seen,) = a.headers
    if trusted:
        assert seen["Forwarded"] == "for=6.6.6.6;proto=https" and seen["X-Real-IP"] == "6.6.6.6"
    else:
        assert "Forwarded" not in seen and "X-Real-IP" not in seen
        assert seen["X-Forwarded-For"] == "127.0.0.1"


# ------------------------------------------------------------------ one message per error


@pytest.mark.parametrize(
    ("key", "values"),
    [
        ("interval_s", [0, -5, 0.0, 86401]),
        ("health_interval_s", [0, -1]),
        ("retry_limit", [-1, 11]),
        ("health_rise", [0, -3, 101]),
        ("buffer_size", [-1, 10]),
    ],
)
async def test_a_bad_value_gets_the_same_message_whatever_it_is(
    key: str, values: list[float]
) -> None:
    """The API, the config file and the data plane say the same thing for 0 and -5."""
    messages: set[str] = set()
    rt = ProxyRuntime(ProxyConfig(admin_port=None))
    app = create_admin_app(rt, TOKEN)
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as c:
        for value in values:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            resp = await c.put("/api/settings", headers=headers, json={key: value})
            assert resp.status == 400
            messages.add((await resp.json())["error"]["message"])
    for value in values:
        with pytest.raises(ControlError) as exc:
            rt.update_settings(**{key: value})
        messages.add(exc.value.message)
        with pytest.raises(ConfigError) as cfg_exc:
            load_config(None, **{key: value})
        messages.add(str(cfg_exc.value).removeprefix("[settings] "))
    assert len(messages) == 1, messages
