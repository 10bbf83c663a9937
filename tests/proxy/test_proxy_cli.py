"""`parlour proxy` as an operator runs it: a subprocess (uvloop), a TOML file, the
admin API, SIGHUP reload, SIGTERM shutdown, and statistics surviving a restart."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from proxy_helpers import BackendFactory, ProxyProcess, poll_admin_until, proxy_process

from parlour.proxy.config import ConfigError, load_config, parse_backend
from parlour.proxy.control import BackendSpec

TOKEN = "cli-test-token-123456"


def test_config_file_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(
        '[proxy]\nmode = "tcp"\nlisten_port = 0\n[settings]\nalgorithm = "p2c"\n'
        "connect_timeout_s = 1\n[[backends]]\nhost = 'h'\nport = 1\nweight = 3\n"
    )
    cfg = load_config(f, retry_limit=5, workers=2)
    assert cfg.mode == "tcp" and cfg.workers == 2
    assert cfg.settings.algorithm == "p2c" and cfg.settings.retry_limit == 5
    assert cfg.settings.connect_timeout_s == 1.0
    assert cfg.backends == (BackendSpec("h", 1, 3),)
    cfg = load_config(f, backends=[parse_backend("x:2:4:10")])
    assert cfg.backends == (BackendSpec("x", 2, 4, 10),)


@pytest.mark.parametrize(
    "text",
    [
        "[nope]\n",
        "[proxy]\nfoo = 1\n",
        "[settings]\nalgorithm = 'fastest'\n",
        "[settings]\nretry_limit = 'two'\n",
        "[settings]\nhealth_rise = 0\n",
        "[[backends]]\nhost = 'h'\n",
        "[[backends]]\nhost = 'h'\nport = 70000\n",
        "[proxy]\nproxy_protocol = 'v1'\n",
        "[settings]\nhash_header = 'X-\u00dcser'\n",  # not ASCII
        "[settings]\nhash_header = '%s'\n" % ("X" * 128),  # longer than 127
        "not toml [",
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str) -> None:
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(ConfigError):
        load_config(f)


@pytest.mark.parametrize("text", ["nohost", "h:notaport", "h:1:0", ":1"])
def test_bad_backend_flag(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_backend(text)


# fast active checks, one result to change state
CHECK_ARGS = ("--health-interval", "0.1", "--rise", "1", "--fall", "1")


async def proxy_ports(p: ProxyProcess) -> tuple[int, int]:
    """The listening and admin ports, read from the proxy's startup log."""
    try:
        async with asyncio.timeout(20):
            (listen,) = await p.wait_for(r"listening on [\d.]+:(\d+)")
            (admin,) = await p.wait_for(r"dashboard on http://[\d.]+:(\d+)/")
    except TimeoutError:
        raise AssertionError(p.log()) from None
    return int(listen.group(1)), int(admin.group(1))


async def test_operator_flow_end_to_end(tmp_path: Path, backends: BackendFactory) -> None:
    a, b = await backends("a"), await backends("b")
    db = tmp_path / "stats.db"
    cfg = tmp_path / "proxy.toml"
    base = f'[proxy]\nlisten_port = 0\nstore = "{db}"\nload_from = "previous"\n[admin]\nport = 0\n'
    cfg.write_text(
        base + f"[[backends]]\nhost = '127.0.0.1'\nport = {a.port}\n"
        f"[[backends]]\nhost = '127.0.0.1'\nport = {b.port}\n"
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as s:
        async with proxy_process(cfg, TOKEN, *CHECK_ARGS) as p:
            port, admin = await proxy_ports(p)
            seen = []
            for _ in range(6):
                async with s.get(f"http://127.0.0.1:{port}/") as r:
                    seen.append(await r.text())
            assert sorted(seen) == ["a", "a", "a", "b", "b", "b"]
            async with s.get(f"http://127.0.0.1:{admin}/api/stats", headers=auth) as r:
                p50 = [x["p50_ms"] for x in (await r.json())["backends"]]
            # response times are measured finer than uvloop's millisecond loop clock
            assert all(v is not None and abs(v - round(v)) > 1e-6 for v in p50), p50
            async with s.post(
                f"http://127.0.0.1:{admin}/api/backends/127.0.0.1:{a.port}/drain", headers=auth
            ) as r:
                assert r.status == 200
            for _ in range(3):
                async with s.get(f"http://127.0.0.1:{port}/") as r:
                    assert await r.text() == "b"
            # kill b: it is marked down (and a is draining): 503 page
            await b.stop()
            b_id = re.escape(f"127.0.0.1:{b.port}")
            await asyncio.wait_for(p.wait_for(rf"backend {b_id} is DOWN"), 10)
            async with s.get(f"http://127.0.0.1:{admin}/api/stats", headers=auth) as r:
                states = {x["id"]: x["state"] for x in (await r.json())["backends"]}
            assert states[f"127.0.0.1:{b.port}"] == "down"
            async with s.get(f"http://127.0.0.1:{port}/") as r:
                assert r.status == 503
            # SIGHUP: the file now lists only a new backend c
            c = await backends("c")
            cfg.write_text(base + f"[[backends]]\nhost = '127.0.0.1'\nport = {c.port}\n")
            p.proc.send_signal(signal.SIGHUP)
            await asyncio.wait_for(p.wait_for(r"configuration reloaded from "), 10)
            # a backend new to the set is checked before it takes traffic
            c_id = re.escape(f"127.0.0.1:{c.port}")
            await asyncio.wait_for(p.wait_for(rf"backend {c_id} is UP"), 10)
            async with s.get(f"http://127.0.0.1:{port}/") as r:
                assert r.status == 200 and await r.text() == "c"
        # (proxy_process checked that it exited with status 0)
        # restart: "previous" brings back c with its statistics
        async with proxy_process(cfg, TOKEN, *CHECK_ARGS) as p:
            port, admin = await proxy_ports(p)
            async with s.get(f"http://127.0.0.1:{admin}/api/stats", headers=auth) as r:
                stats = await r.json()
            by_id = {x["id"]: x for x in stats["backends"]}
            assert list(by_id) == [f"127.0.0.1:{c.port}"]
            assert by_id[f"127.0.0.1:{c.port}"]["requests"] >= 1


async def test_starts_with_no_backends_and_asks_for_them(
    tmp_path: Path, backends: BackendFactory
) -> None:
    """No backend anywhere is not an error: the proxy starts, answers 503 and says how to
    add one; one added through the API takes traffic once its first check passes."""
    cfg = tmp_path / "proxy.toml"
    cfg.write_text("[proxy]\nlisten_port = 0\n[admin]\nport = 0\n")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    a = await backends("a")
    async with aiohttp.ClientSession() as s, proxy_process(cfg, TOKEN, *CHECK_ARGS) as p:
        port, admin = await proxy_ports(p)
        await p.wait_for(r"no backends yet: .*dashboard.*POST /api/backends")
        async with s.get(f"http://127.0.0.1:{port}/") as r:
            assert r.status == 503
        async with s.get(f"http://127.0.0.1:{admin}/api/stats", headers=auth) as r:
            assert (await r.json())["prompt"]["reason"] == "no_backends"
        body = {"host": "127.0.0.1", "port": a.port}
        async with s.post(f"http://127.0.0.1:{admin}/api/backends", headers=auth, json=body) as r:
            assert r.status == 201 and (await r.json())["backend"]["state"] == "checking"
        await asyncio.wait_for(p.wait_for(rf"backend 127\.0\.0\.1:{a.port} is UP"), 10)
        async with s.get(f"http://127.0.0.1:{port}/") as r:
            assert (r.status, await r.text()) == (200, "a")
        async with s.get(f"http://127.0.0.1:{admin}/api/stats", headers=auth) as r:
            assert (await r.json())["prompt"] is None


async def test_a_failed_reload_says_why_once(tmp_path: Path, backends: BackendFactory) -> None:
    """Issue 11: the log said "reload failed: reload failed: ..."."""
    a = await backends("a")
    cfg = tmp_path / "proxy.toml"
    good = "[proxy]\nlisten_port = 0\n[admin]\nport = 0\n"
    good += f"[[backends]]\nhost = '127.0.0.1'\nport = {a.port}\n"
    cfg.write_text(good)
    async with aiohttp.ClientSession() as s, proxy_process(cfg, TOKEN) as p:
        _, admin = await proxy_ports(p)
        await asyncio.wait_for(p.wait_for(r"ready \(pid \d+\): SIGHUP reloads"), 10)
        cfg.write_text(good + "[settings]\ninterval_s = -5\n")
        p.proc.send_signal(signal.SIGHUP)
        (logged,) = await asyncio.wait_for(
            p.wait_for(r"ERROR parlour.proxy: (reload failed: .*)"), 10
        )
        assert logged.group(1) == (
            "reload failed: [settings] interval_s must be a number of seconds in (0, 86400]"
        )
        url = f"http://127.0.0.1:{admin}/api/reload"
        async with s.post(url, headers={"Authorization": f"Bearer {TOKEN}"}) as r:
            assert r.status == 400
            message = (await r.json())["error"]["message"]
        assert message == "[settings] interval_s must be a number of seconds in (0, 86400]"


async def test_workers_share_the_port_and_sighup_keeps_connections(
    tmp_path: Path, backends: BackendFactory
) -> None:
    """--workers 2: both processes accept on one port (SO_REUSEPORT); SIGHUP reaches every
    worker and an established keep-alive connection keeps working across it."""
    a, b = await backends("a"), await backends("b")
    cfg = tmp_path / "proxy.toml"
    base = f'[proxy]\nlisten_port = 0\nworkers = 2\nstore = "{tmp_path / "s.db"}"\n'
    base += "[admin]\nport = 0\n"
    cfg.write_text(base + f"[[backends]]\nhost = '127.0.0.1'\nport = {a.port}\n")
    async with proxy_process(cfg, TOKEN) as p:
        try:
            ports = await asyncio.wait_for(p.wait_for(r"listening on [\d.]+:(\d+)", 2), 20)
        except TimeoutError:
            raise AssertionError(p.log()) from None
        assert ports[0].group(1) == ports[1].group(1)  # port 0: one port for both workers
        port = int(ports[0].group(1))
        admin = await asyncio.wait_for(p.wait_for(r"dashboard on http://[\d.]+:(\d+)/", 1), 5)
        await asyncio.wait_for(p.wait_for(r"worker \d \(pid \d+\) ready", 2), 10)
        n = 40
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as s:
            for _ in range(n):  # a fresh connection each: the kernel spreads them
                async with s.get(f"http://127.0.0.1:{port}/") as r:
                    assert r.status == 200 and await r.text() == "a"
            # worker 0 adds worker 1's share (published on a 1 s tick)
            admin_port = int(admin[0].group(1))
            await poll_admin_until(s, admin_port, TOKEN, lambda st: st["totals"]["requests"] == n)
        # SIGHUP with an established keep-alive connection
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        writer.write(request)
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\na"), 5)).startswith(
            b"HTTP/1.1 200"
        )
        cfg.write_text(base + f"[[backends]]\nhost = '127.0.0.1'\nport = {b.port}\n")
        p.proc.send_signal(signal.SIGHUP)
        await asyncio.wait_for(p.wait_for("configuration reloaded", 2), 10)
        # b, new to both workers, is checked by each before it takes traffic
        b_id = re.escape(f"127.0.0.1:{b.port}")
        await asyncio.wait_for(p.wait_for(rf"backend {b_id} is UP", 2), 10)
        writer.write(request)  # same connection, now balanced over the new list
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\nb"), 5)).startswith(
            b"HTTP/1.1 200"
        )
        writer.close()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--tls-cert", "{missing}", "--tls-key", "{missing}"], {}, "no such file"),
        (["-b", "127.0.0.1:1"], {"PARLOUR_PROXY_TOKEN": "short"}, "at least 8 characters"),
        (["-b", "127.0.0.1:1", "--store", "{not_a_db}"], {}, "file is not a database"),
        (["-b", "127.0.0.1:1", "--port", "{taken}", "--no-admin"], {}, "Address already in use"),
    ],
)
def test_operator_mistakes_get_a_one_line_error(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    import socket
    import subprocess

    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("not sqlite\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        args = [
            a.format(not_a_db=not_a_db, taken=taken.getsockname()[1], missing=tmp_path / "x.pem")
            for a in args
        ]
        out = subprocess.run(
            [sys.executable, "-m", "parlour", "proxy", "--port", "0", "--admin-port", "0", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PARLOUR_PROXY_TOKEN": "", **env},
        )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("Error: ")
    assert message in out.stderr


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (Path(__file__).parents[2] / "examples").glob("proxy*.toml"))
)
def test_example_configurations_load(name: str) -> None:
    """The example files in examples/ stay valid as the configuration grows."""
    cfg = load_config(Path(__file__).parents[2] / "examples" / name)
    assert cfg.backends
    if name == "proxy-tls.toml":
        assert cfg.tls is not None and cfg.tls.sni and cfg.backend_tls is not None
        assert cfg.admin_tls_cert is not None
