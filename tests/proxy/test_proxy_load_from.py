"""Where the backends and settings come from at start (issue 11, must fix 7:
`load_from = "previous"` silently overrode an explicit `-b`).

The rule: what the operator typed on the command line wins; then, with
`load_from = "previous"`, what the previous run saved in the store; then the config file;
then the defaults. The log says what came from where.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from proxy_helpers import FakeStore

from parlour.proxy.config import load_config, parse_backend
from parlour.proxy.control import BackendSpec, ProxySettings
from parlour.proxy.runtime import ProxyRuntime

A, B, C = BackendSpec("10.0.0.1", 80), BackendSpec("10.0.0.2", 80), BackendSpec("10.0.0.3", 80)


def previous_run() -> FakeStore:
    store = FakeStore()
    store.backends = [(C, "up"), (B, "draining")]
    store.save_settings(ProxySettings(algorithm="least_conn", retry_limit=7))
    return store


def conf(tmp_path: Path) -> Path:
    f = tmp_path / "proxy.toml"
    f.write_text(
        '[proxy]\nload_from = "previous"\nstore = "x.db"\n'
        '[settings]\nalgorithm = "p2c"\n[[backends]]\nhost = "10.0.0.1"\nport = 80\n'
    )
    return f


def start_state(cfg: object, store: FakeStore) -> ProxyRuntime:
    rt = ProxyRuntime(cfg, store=store, admin=False)  # type: ignore[arg-type]
    rt._load_initial_state()  # (what start() does first; no sockets needed)
    return rt


def test_command_line_backends_win_over_the_previous_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(conf(tmp_path), backends=[parse_backend("10.0.0.2:80")], retry_limit=3)
    assert cfg.explicit == frozenset({"backends", "retry_limit"})
    with caplog.at_level(logging.INFO, logger="parlour.proxy"):
        rt = start_state(cfg, previous_run())
    assert [(b.id, b.state) for b in rt.backends()] == [(B.id, "up")]
    # settings: the previous run's, except what the command line set
    assert (rt.settings().algorithm, rt.settings().retry_limit) == ("least_conn", 3)
    assert "backends: 1 from the command line (--backend)" in caplog.text
    assert "load_from = previous: not used for backends" in caplog.text
    assert "settings: the previous run's (x.db), except retry_limit from the command line" in (
        caplog.text
    )


def test_previous_run_wins_over_the_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(conf(tmp_path))
    assert cfg.explicit == frozenset()
    with caplog.at_level(logging.INFO, logger="parlour.proxy"):
        rt = start_state(cfg, previous_run())
    assert [(b.id, b.state) for b in rt.backends()] == [(C.id, "up"), (B.id, "draining")]
    assert rt.settings().algorithm == "least_conn"
    assert "backends: 2 from the previous run (x.db)" in caplog.text


def test_file_when_the_store_has_no_previous_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(conf(tmp_path))
    with caplog.at_level(logging.INFO, logger="parlour.proxy"):
        rt = start_state(cfg, FakeStore())
    assert [b.id for b in rt.backends()] == [A.id]
    assert rt.settings().algorithm == "p2c"
    assert f"backends: 1 from {tmp_path / 'proxy.toml'} (no previous run in x.db)" in caplog.text


def test_load_from_config_uses_the_file_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(conf(tmp_path), load_from="config")
    with caplog.at_level(logging.INFO, logger="parlour.proxy"):
        rt = start_state(cfg, previous_run())
    assert [b.id for b in rt.backends()] == [A.id]
    assert rt.settings().algorithm == "p2c"
    assert f"backends: 1 from {tmp_path / 'proxy.toml'}" in caplog.text


def test_previous_without_a_store_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = load_config(None, load_from="previous", backends=[A])
    with caplog.at_level(logging.INFO, logger="parlour.proxy"):
        rt = ProxyRuntime(cfg, admin=False)
        rt._load_initial_state()
    assert "load_from = previous needs a store" in caplog.text
