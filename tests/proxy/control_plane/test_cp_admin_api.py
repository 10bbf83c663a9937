from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cp_fakes import TOKEN, FakeClock, FakeControl, admin_client, auth
from prometheus_client.parser import text_string_to_metric_families

from parlour.proxy.admin import RedactingAccessLogger, create_admin_app, status_for_code
from parlour.proxy.control import BackendSpec, ControlError
from parlour.proxy.stats_store import StatsStore

A, B = "10.0.0.1:80", "10.0.0.2:81"


def _control() -> FakeControl:
    return FakeControl([BackendSpec("10.0.0.1", 80), BackendSpec("10.0.0.2", 81)], FakeClock())


async def _error(resp: Any, status: int, code: str) -> str:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return str(body["error"]["message"])


ENDPOINTS = [
    ("GET", "/api/stats"),
    ("GET", "/api/backends"),
    ("POST", "/api/backends"),
    ("DELETE", f"/api/backends/{A}"),
    ("POST", f"/api/backends/{A}/enable"),
    ("POST", f"/api/backends/{A}/disable"),
    ("POST", f"/api/backends/{A}/drain"),
    ("PUT", f"/api/backends/{A}/weight"),
    ("GET", "/api/settings"),
    ("PUT", "/api/settings"),
    ("POST", "/api/reload"),
    ("GET", "/api/events"),
    ("GET", "/metrics"),
]


@pytest.mark.parametrize("headers", [{}, auth("wrong-token-x"), {"Authorization": TOKEN}])
async def test_every_endpoint_requires_the_token(headers: dict[str, str]) -> None:
    control = _control()
    async with admin_client(control) as client:
        for method, path in ENDPOINTS:
            resp = await client.request(method, path, headers=headers, json={"weight": 5})
            await _error(resp, 401, "unauthorized")
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert len(control.backends()) == 2 and control.reloads == 0


async def test_dashboard_files_need_no_token_and_carry_security_headers() -> None:
    async with admin_client(_control()) as client:
        resp = await client.get("/")
        assert resp.status == 200 and resp.content_type == "text/html"
        assert "Server Properties Log" in await resp.text()
        assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        for name, ctype in [("app.js", "text/javascript"), ("style.css", "text/css")]:
            resp = await client.get(f"/static/{name}")
            assert resp.status == 200 and resp.content_type == ctype
        await _error(await client.get("/static/../app.py"), 404, "not_found")
        await _error(await client.get("/static/nothing.js"), 404, "not_found")


async def test_stats_and_backends() -> None:
    control = _control()
    control.bump(A, requests=5, active_conns=1)
    async with admin_client(control) as client:
        resp = await client.get("/api/stats", headers=auth())
        assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
        data = await resp.json()
        assert data["totals"]["requests"] == 5
        assert [b["id"] for b in data["backends"]] == [A, B]
        assert data["settings"]["algorithm"] == "round_robin"
        data = await (await client.get("/api/backends", headers=auth())).json()
        assert data["backends"][0]["active_conns"] == 1
        assert data["backends"][0]["air_time_s"] == 0.0


async def test_add_remove_and_state_changes() -> None:
    control = _control()
    async with admin_client(control) as client:
        resp = await client.post(
            "/api/backends",
            headers=auth(),
            json={"host": "10.0.0.3", "port": 82, "weight": 4, "max_conns": 9},
        )
        assert resp.status == 201
        assert (await resp.json())["backend"]["id"] == "10.0.0.3:82"
        assert control.backends()[-1].weight == 4 and control.backends()[-1].max_conns == 9
        for action, state in [("drain", "draining"), ("disable", "disabled"), ("enable", "up")]:
            resp = await client.post(f"/api/backends/{A}/{action}", headers=auth())
            assert resp.status == 200
            assert (await resp.json())["backend"]["state"] == state
            assert control.backends()[0].state == state
        resp = await client.put(f"/api/backends/{B}/weight", headers=auth(), json={"weight": 7})
        assert resp.status == 200 and control.backends()[1].weight == 7
        resp = await client.delete(f"/api/backends/{B}", headers=auth())
        assert resp.status == 200
        assert [b.id for b in control.backends()] == [A, "10.0.0.3:82"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"port": 80}, "host"),
        ({"host": "", "port": 80}, "host"),
        ({"host": "a b", "port": 80}, "host"),
        ({"host": "x" * 300, "port": 80}, "host"),
        ({"host": "h"}, "port"),
        ({"host": "h", "port": 0}, "port"),
        ({"host": "h", "port": 70000}, "port"),
        ({"host": "h", "port": "80"}, "port"),
        ({"host": "h", "port": True}, "port"),
        ({"host": "h", "port": 80, "weight": 0}, "weight"),
        ({"host": "h", "port": 80, "max_conns": -1}, "max_conns"),
        ({"host": "h", "port": 80, "colour": "red"}, "colour"),
        ([1, 2], "object"),
    ],
)
async def test_add_backend_validation(body: object, needle: str) -> None:
    control = _control()
    async with admin_client(control) as client:
        resp = await client.post("/api/backends", headers=auth(), json=body)
        assert needle in await _error(resp, 400, "invalid")
    assert len(control.backends()) == 2


async def test_bad_json_and_oversize_bodies() -> None:
    async with admin_client(_control()) as client:
        headers = {**auth(), "Content-Type": "application/json"}
        await _error(
            await client.post("/api/backends", headers=headers, data=b"{"), 400, "bad_json"
        )
        await _error(
            await client.put("/api/settings", headers=headers, data=b'{"interval_s": NaN}'),
            400,
            "bad_json",
        )
        await _error(
            await client.put("/api/settings", headers=headers, data=b"\xff\xfe"), 400, "bad_json"
        )
        big = b'{"hash_header": "' + b"x" * 70_000 + b'"}'
        await _error(await client.put("/api/settings", headers=headers, data=big), 413, "too_large")


async def test_control_errors_map_to_status() -> None:
    async with admin_client(_control()) as client:
        await _error(
            await client.post("/api/backends/nope:1/drain", headers=auth()), 404, "unknown_backend"
        )
        await _error(
            await client.delete("/api/backends/nope:1", headers=auth()), 404, "unknown_backend"
        )
        await _error(
            await client.put("/api/backends/nope:1/weight", headers=auth(), json={"weight": 2}),
            404,
            "unknown_backend",
        )
        resp = await client.post(
            "/api/backends", headers=auth(), json={"host": "10.0.0.1", "port": 80}
        )
        await _error(resp, 409, "backend_exists")
        await _error(
            await client.put(f"/api/backends/{A}/weight", headers=auth(), json={}), 400, "invalid"
        )
        await _error(await client.get("/api/nothing", headers=auth()), 404, "not_found")
        await _error(await client.patch("/api/settings", headers=auth()), 405, "method_not_allowed")
        await _error(await client.get("/api/events?limit=0", headers=auth()), 400, "invalid")
    assert status_for_code("pool_not_found") == 404 and status_for_code("weird") == 400


async def test_settings_get_and_partial_update() -> None:
    control = _control()
    async with admin_client(control) as client:
        data = await (await client.get("/api/settings", headers=auth())).json()
        assert data["settings"]["retry_limit"] == 2
        resp = await client.put(
            "/api/settings",
            headers=auth(),
            json={"algorithm": "least_conn", "interval_s": 3, "trust_forwarded": True},
        )
        assert resp.status == 200
        body = await resp.json()
        assert body["settings"]["algorithm"] == "least_conn"
        s = control.settings()
        assert (s.algorithm, s.interval_s, s.trust_forwarded, s.retry_limit) == (
            "least_conn",
            3.0,
            True,
            2,
        )
        assert isinstance(s.interval_s, float)


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [
        ({"algorithm": "fastest"}, "invalid", "algorithm"),
        ({"selection_mode": "sometimes"}, "invalid", "selection_mode"),
        ({"retry_limit": "3"}, "invalid", "retry_limit"),
        ({"retry_limit": 2.5}, "invalid", "retry_limit"),
        ({"retry_limit": -1}, "invalid", "retry_limit"),
        ({"interval_s": -1}, "invalid", "interval_s"),
        ({"interval_s": "soon"}, "invalid", "interval_s"),
        ({"trust_forwarded": 1}, "invalid", "trust_forwarded"),
        ({"health_path": 5}, "invalid", "health_path"),
        ({"listen_port": 80}, "restart_required", "listen_port"),
        ({"listen_prot": 80}, "unknown_setting", "listen_prot"),
        ({}, "invalid", "no settings"),
        ({"retry_limit": 50}, "invalid_setting", "retry_limit"),  # from ControlError
    ],
)
async def test_settings_validation(body: dict[str, object], code: str, needle: str) -> None:
    control = _control()
    before = control.settings()
    async with admin_client(control) as client:
        resp = await client.put("/api/settings", headers=auth(), json=body)
        assert needle in await _error(resp, 400, code)
    assert control.settings() == before


async def test_reload() -> None:
    control = _control()
    async with admin_client(control) as client:
        resp = await client.post("/api/reload", headers=auth())
        assert resp.status == 200 and control.reloads == 1
        control.reload_error = ControlError("bad_config", "line 3: bad value")
        msg = await _error(await client.post("/api/reload", headers=auth()), 400, "bad_config")
        assert "line 3" in msg


async def test_internal_errors_are_json_500(caplog: pytest.LogCaptureFixture) -> None:
    control = _control()

    def boom() -> None:
        raise RuntimeError("kaboom")

    control.totals = boom  # type: ignore[method-assign,assignment]
    with caplog.at_level(logging.ERROR, logger="parlour.proxy.admin"):
        async with admin_client(control) as client:
            msg = await _error(await client.get("/api/stats", headers=auth()), 500, "internal")
    assert "kaboom" not in msg
    assert "kaboom" in caplog.text


async def test_metrics_endpoint_parses_and_can_be_public() -> None:
    control = _control()
    control.bump(A, requests=3)
    async with admin_client(control) as client:
        resp = await client.get("/metrics", headers=auth())
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        names = {f.name for f in text_string_to_metric_families(await resp.text())}
        assert "parlour_proxy_backend_requests" in names
    async with admin_client(control, metrics_public=True) as client:
        assert (await client.get("/metrics")).status == 200
        assert (await client.get("/api/stats")).status == 401


async def test_changes_are_persisted_and_logged_with_a_store(tmp_path: Path) -> None:
    control = _control()
    clock = FakeClock(5_000.0)
    with StatsStore(tmp_path / "proxy.db") as store:
        async with admin_client(control, store, clock=clock) as client:
            await client.post("/api/backends", headers=auth(), json={"host": "h3", "port": 3})
            await client.post(f"/api/backends/{A}/drain", headers=auth())
            control.put(B, state="down")  # health state is not an operator state
            await client.put("/api/settings", headers=auth(), json={"algorithm": "random"})
            resp = await client.get("/api/events?limit=10", headers=auth())
            events = (await resp.json())["events"]
            resp = await client.get(f"/api/events?backend={A}", headers=auth())
            assert [e["kind"] for e in (await resp.json())["events"]] == ["draining"]
        assert [(e["backend_id"], e["kind"]) for e in events] == [
            ("*", "settings"),
            (A, "draining"),
            ("h3:3", "added"),
        ]
        assert events[0]["at"] == 5_000.0
        assert store.load_backends() == [
            (BackendSpec("10.0.0.1", 80), "draining"),
            (BackendSpec("10.0.0.2", 81), "up"),
            (BackendSpec("h3", 3), "up"),
        ]
        saved = store.load_settings()
        assert saved is not None and saved["algorithm"] == "random"


async def test_events_without_a_store_is_empty() -> None:
    async with admin_client(_control()) as client:
        assert await (await client.get("/api/events", headers=auth())).json() == {"events": []}


def test_short_tokens_are_refused() -> None:
    with pytest.raises(ValueError, match="token"):
        create_admin_app(_control(), "short")


async def test_access_log_redacts_tokens(caplog: pytest.LogCaptureFixture) -> None:
    app = create_admin_app(_control(), TOKEN)
    runner = web.AppRunner(
        app, access_log_class=RedactingAccessLogger, access_log=logging.getLogger("test.access")
    )
    await runner.setup()
    with caplog.at_level(logging.INFO, logger="test.access"):
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            url = f"http://{host}:{port}/?token={TOKEN}&x=1"
            async with aiohttp.ClientSession() as session, session.get(url) as resp:
                assert resp.status == 200
        finally:
            await runner.cleanup()  # waits for the handler, so the log line is written
    assert TOKEN not in caplog.text
    assert "token=***&x=1" in caplog.text


async def test_body_arriving_in_small_pieces_is_read_whole() -> None:
    control = _control()

    async def trickle() -> AsyncIterator[bytes]:
        for piece in (b'{"host": "10.0.0', b'.7", "po', b'rt": 8', b"7}"):
            yield piece

    async with admin_client(control) as client:
        resp = await client.post("/api/backends", headers=auth(), data=trickle())
        assert resp.status == 201, await resp.text()
    assert control.backends()[-1].id == "10.0.0.7:87"


async def test_oversize_chunked_body_is_refused() -> None:
    async def big() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 8192

    async with admin_client(_control()) as client:
        resp = await client.put("/api/settings", headers=auth(), data=big())
        await _error(resp, 413, "too_large")
