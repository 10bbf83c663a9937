from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parlour.proxy.control import BackendSnapshot, BackendSpec, ProxySettings
from parlour.proxy.stats_store import MIGRATIONS, SCHEMA_VERSION, StatsStore, StoreError


def _snap(id_host: str = "10.0.0.1", port: int = 80, **kw: object) -> BackendSnapshot:
    fields: dict[str, object] = {
        "id": f"{id_host}:{port}",
        "host": id_host,
        "port": port,
        "weight": 2,
        "max_conns": 50,
        "state": "down",
        "total_conns": 12,
        "requests": 340,
        "bytes_in": 10_000,
        "bytes_out": 2_000,
        "connect_errors": 3,
        "response_errors": 1,
        "retries": 4,
        "state_since": 1_700_000_100.5,
        "total_up_s": 3600.25,
        "last_connected": 1_700_000_050.0,
        "last_crashed": 1_700_000_100.5,
        "last_crash_reason": "health check: connection refused",
        "p50_ms": 1.5,
        "p99_ms": 20.0,
    }
    fields.update(kw)
    return BackendSnapshot(**fields)  # type: ignore[arg-type]


def test_fresh_database_is_at_current_schema_and_wal(tmp_path: Path) -> None:
    with StatsStore(tmp_path / "proxy.db") as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.load_backends() == []
        assert store.load_settings() is None
        assert store.load_snapshots() == {}
        assert store.events(10) == []
    db = sqlite3.connect(tmp_path / "proxy.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_backends_round_trip_and_replace(tmp_path: Path) -> None:
    path = tmp_path / "proxy.db"
    items = [
        (BackendSpec("b.example", 8080, 3, 10), "draining"),
        (BackendSpec("a.example", 81), "disabled"),
        (BackendSpec("127.0.0.1", 9000), "up"),
    ]
    with StatsStore(path) as store:
        store.save_backends(items)
        assert store.load_backends() == items  # insertion order kept
    with StatsStore(path) as store:
        assert store.load_backends() == items
        store.save_backends(items[1:2])
        assert store.load_backends() == items[1:2]
        store.save_backends([])
        assert store.load_backends() == []


def test_unknown_state_reads_back_as_up(tmp_path: Path) -> None:
    with StatsStore(tmp_path / "p.db") as store:
        store.save_backends([(BackendSpec("h", 1), "bogus")])
        assert store.load_backends() == [(BackendSpec("h", 1), "up")]


def test_settings_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "proxy.db"
    s = ProxySettings(algorithm="least_conn", selection_mode="interval", interval_s=2.5)
    with StatsStore(path) as store:
        store.save_settings(ProxySettings())
        store.save_settings(s)
    with StatsStore(path) as store:
        loaded = store.load_settings()
    assert loaded is not None
    assert ProxySettings(**loaded) == s  # type: ignore[arg-type]


def test_snapshots_survive_restart(tmp_path: Path) -> None:
    path = tmp_path / "proxy.db"
    a = _snap("10.0.0.1", active_conns=7, queued=2)
    b = _snap("10.0.0.2", state="up", last_crashed=None, last_crash_reason=None, p50_ms=None)
    with StatsStore(path) as store:
        store.save_snapshot([a, b])
        store.save_snapshot([_snap("10.0.0.1", requests=999, active_conns=7, queued=2)])
    with StatsStore(path) as store:
        snaps = store.load_snapshots()
    assert set(snaps) == {a.id, b.id}
    # active connections and the queue do not survive a restart; everything else does
    assert snaps[a.id] == _snap("10.0.0.1", requests=999)
    assert snaps[b.id] == b
    assert snaps[a.id].last_crash_reason == "health check: connection refused"


def test_forget_snapshot(tmp_path: Path) -> None:
    with StatsStore(tmp_path / "p.db") as store:
        store.save_snapshot([_snap("x"), _snap("y")])
        store.forget_snapshot("x:80")
        assert set(store.load_snapshots()) == {"y:80"}


def test_event_log_is_bounded_newest_first(tmp_path: Path) -> None:
    with StatsStore(tmp_path / "p.db", max_events=5) as store:
        for i in range(12):
            store.record_event(f"b{i % 2}:80", "down", f"reason {i}", 1000.0 + i)
        events = store.events(100)
        assert [e.reason for e in events] == [f"reason {i}" for i in range(11, 6, -1)]
        assert events[0].at == 1011.0 and events[0].kind == "down"
        assert [e.reason for e in store.events(2)] == ["reason 11", "reason 10"]
        assert [e.reason for e in store.events(10, "b0:80")] == ["reason 10", "reason 8"]
        store.record_event("b", "x" * 100, "y" * 10_000, 1.0)
        assert len(store.events(1)[0].reason) == 500


def test_migrates_a_version_1_database_keeping_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute(
        "INSERT INTO backends VALUES ('h:1', 'h', 1, 1, 0, 'disabled', 0)",
    )
    db.execute(
        "INSERT INTO backend_stats VALUES ('h:1', 'h', 1, 1, 0, 'up', 5.0, 7, 8, 9, 10, 1, 2, "
        "3, 60.0, 4.0, NULL, NULL, 6.0)"
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with StatsStore(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert store.load_backends() == [(BackendSpec("h", 1), "disabled")]
        snap = store.load_snapshots()["h:1"]
        assert (snap.total_conns, snap.requests, snap.p50_ms) == (7, 8, None)
        store.record_event("h:1", "up", "migrated", 1.0)
        assert len(store.events(5)) == 1


def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer"):
        StatsStore(path)


def test_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        StatsStore(path)


def test_migration_failure_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "half.db"
    db = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("CREATE TABLE events (x)")  # collides with migration 2
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with pytest.raises(StoreError):
        StatsStore(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    cols = [r[1] for r in db.execute("PRAGMA table_info(backend_stats)")]
    assert "p50_ms" not in cols
    db.close()


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(deadline=None, max_examples=40)
@given(
    st.lists(
        st.tuples(
            st.builds(
                BackendSpec,
                host=_text.filter(bool),
                port=st.integers(1, 65535),
                weight=st.integers(1, 1000),
                max_conns=st.integers(0, 10**6),
            ),
            st.sampled_from(["up", "disabled", "draining"]),
        ),
        max_size=8,
        unique_by=lambda item: item[0].id,
    ),
    st.integers(0, 2**62),
    st.one_of(st.none(), _text),
)
def test_round_trip_property(
    tmp_path_factory: pytest.TempPathFactory,
    items: list[tuple[BackendSpec, str]],
    counter: int,
    reason: str | None,
) -> None:
    path = tmp_path_factory.mktemp("prop") / "p.db"
    snaps = [
        _snap(spec.host, spec.port, requests=counter, last_crash_reason=reason, state=state)
        for spec, state in items
    ]
    with StatsStore(path) as store:
        store.save_backends(items)
        store.save_snapshot(snaps)
    with StatsStore(path) as store:
        assert store.load_backends() == items
        assert store.load_snapshots() == {s.id: s for s in snaps}


def test_safe_to_use_from_several_threads(tmp_path: Path) -> None:
    import threading

    store = StatsStore(tmp_path / "t.db", max_events=1000)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(50):
                store.record_event(f"b{n}", "up", str(i), float(i))
                store.save_snapshot([_snap(f"h{n}", requests=i)])
                store.load_snapshots()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.events(1000)) == 200
    assert {s.requests for s in store.load_snapshots().values()} == {49}
    store.close()
