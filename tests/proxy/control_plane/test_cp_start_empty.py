"""Starting with no backends, and being asked for addresses when none is up (issue 11,
must fix 5): the source design's "when all servers are down the operator is asked for new
addresses". The API says so (`prompt` in /api/stats and /api/backends) and the dashboard
shows a form for them; the listener's restart-only settings are shown read-only.
"""

from __future__ import annotations

from cp_fakes import FakeClock, FakeControl, admin_client, auth

from parlour.proxy.control import BackendSpec


async def test_stats_ask_for_backends_when_there_are_none() -> None:
    control = FakeControl([], FakeClock())
    async with admin_client(control) as client:
        stats = await (await client.get("/api/stats", headers=auth())).json()
        assert stats["prompt"]["reason"] == "no_backends"
        assert "POST /api/backends" in stats["prompt"]["message"]
        listed = await (await client.get("/api/backends", headers=auth())).json()
        assert listed["prompt"] == stats["prompt"]
        added = await client.post(
            "/api/backends", headers=auth(), json={"host": "10.0.0.9", "port": 80}
        )
        assert added.status == 201
        stats = await (await client.get("/api/stats", headers=auth())).json()
        assert stats["prompt"] is None


async def test_stats_ask_for_backends_when_none_takes_traffic() -> None:
    control = FakeControl([BackendSpec("10.0.0.1", 80), BackendSpec("10.0.0.2", 81)])
    async with admin_client(control) as client:
        assert (await (await client.get("/api/stats", headers=auth())).json())["prompt"] is None
        control.put("10.0.0.1:80", state="down", last_crash_reason="refused")
        control.put("10.0.0.2:81", state="disabled")
        prompt = (await (await client.get("/api/stats", headers=auth())).json())["prompt"]
        assert prompt["reason"] == "none_up"
        assert "2 backends" in prompt["message"] and "503" in prompt["message"]
        control.put("10.0.0.2:81", state="draining")  # finishes, takes nothing new
        prompt = (await (await client.get("/api/stats", headers=auth())).json())["prompt"]
        assert prompt["reason"] == "none_up"
        control.put("10.0.0.1:80", state="up")
        assert (await (await client.get("/api/stats", headers=auth())).json())["prompt"] is None


async def test_settings_show_the_listener_read_only() -> None:
    control = FakeControl([])
    async with admin_client(control) as client:
        got = await (await client.get("/api/settings", headers=auth())).json()
        listener = got["listener"]
        assert {"mode", "listen_host", "listen_port", "backlog", "workers", "load_from"} <= set(
            listener
        )
        assert listener["listen_port"] == control.listener().listen_port
        for key, value in (("listen_port", 8081), ("backlog", 10), ("load_from", "config")):
            resp = await client.put("/api/settings", headers=auth(), json={key: value})
            assert resp.status == 400
            error = (await resp.json())["error"]
            assert error["code"] == "restart_required" and "restart" in error["message"]
