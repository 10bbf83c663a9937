"""Settings: defaults, TOML, env, flags, precedence and clear errors."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from parlour.server.config import (
    ADMIN_PASSWORD_ENV,
    SETTINGS,
    ConfigError,
    Settings,
    describe,
    load_settings,
)
from parlour.server.logs import configure_logging, fields


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "parlour.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    s = load_settings(env={})
    assert s == Settings()
    assert (s.host, s.port, s.store, s.duplicate_login) == ("127.0.0.1", 7878, "sqlite", "allow")
    assert s.admin_password is None


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = 1000\nhost = "0.0.0.0"\nrate = 5\nlog_level = "debug"\n')
    s = load_settings(
        config_file=path,
        env={"PARLOUR_PORT": "2000", "PARLOUR_RATE": "7.5"},
        flags={"port": 3000, "host": None},
    )
    assert s.port == 3000  # flag
    assert s.rate == 7.5  # env over file
    assert s.host == "0.0.0.0"  # file (the None flag is ignored)
    assert s.log_level == "DEBUG"


def test_server_table_and_lists(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\ndefault_rooms = ["lobby", "dev"]\ndata_dir = "~/x"\n')
    s = load_settings(config_file=path, env={})
    assert s.default_rooms == ("lobby", "dev")
    assert s.data_dir == Path("~/x").expanduser()
    s = load_settings(env={"PARLOUR_DEFAULT_ROOMS": "a, b ,c"})
    assert s.default_rooms == ("a", "b", "c")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("prot = 1", "unknown setting 'prot'"),
        ('port = "x"', "port"),
        ("port = 70000", "at most 65535"),
        ("rate = 0", "rate"),
        ('store = "postgres"', "not one of sqlite, memory"),
        ('default_rooms = ["ok", "bad name"]', "bad room name"),
        ('default_rooms = ["a", "A"]', "listed twice"),
        ("heartbeat = 100\nidle_timeout = 50", "shorter than idle_timeout"),
        ("max_frame = 1000", "max_frame"),
        ("port = true", "expected an integer"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_file_values_have_clear_errors(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(config_file=write(tmp_path, toml), env={})


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="PARLOUR_MAX_CONNECTIONS"):
        load_settings(env={"PARLOUR_MAX_CONNECTIONS": "many"})


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "nope.toml", env={})


def test_tls_needs_both_files(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match="together"):
        load_settings(env={}, flags={"tls_cert": cert})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={}, flags={"tls_cert": cert, "tls_key": tmp_path / "k.pem"})


def test_admin_password_only_from_env_and_never_shown() -> None:
    s = load_settings(env={ADMIN_PASSWORD_ENV: "correct horse"})
    assert s.admin_password == "correct horse"
    assert "correct horse" not in repr(s)
    assert "correct horse" not in str(describe(s))
    with pytest.raises(ConfigError, match="shorter than min_password"):
        load_settings(env={ADMIN_PASSWORD_ENV: "short"})


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    for spec in SETTINGS:
        assert f"`{spec.name}`" in doc, spec.name
        assert spec.env in doc, spec.env
    assert ADMIN_PASSWORD_ENV in doc


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    logger = logging.getLogger("parlour")
    saved = (logger.level, logger.propagate)
    yield
    logger.setLevel(saved[0])
    logger.propagate = saved[1]


def test_json_logs_carry_fields() -> None:
    stream = io.StringIO()
    handler = configure_logging("INFO", "json", stream)
    try:
        logging.getLogger("parlour.test").info("login", extra=fields(user="bob", peer="1.2.3.4:5"))
        logging.getLogger("parlour.test").debug("hidden")
        [line] = stream.getvalue().splitlines()
        record = json.loads(line)
        assert record["event"] == "login" and record["user"] == "bob"
        assert record["level"] == "info" and record["peer"] == "1.2.3.4:5"
    finally:
        logging.getLogger("parlour").removeHandler(handler)


def test_text_logs_carry_fields() -> None:
    stream = io.StringIO()
    handler = configure_logging("DEBUG", "text", stream)
    try:
        logging.getLogger("parlour.test").warning("lockout", extra=fields(user="bob b"))
        line = stream.getvalue()
        assert "WARNING" in line and "lockout" in line and 'user="bob b"' in line
    finally:
        logging.getLogger("parlour").removeHandler(handler)


def test_store_and_bus_of_several_nodes(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(
        'store = "postgresql://parlour:s3cret@db:5432/chat"\n'
        'bus = "redis://:pw@cache:6379/0"\nnode_name = "chat1"\n'
    )
    s = load_settings(config_file=f, env={})
    assert s.postgres and s.redis and s.node_name == "chat1"
    shown = describe(s)
    assert "s3cret" not in str(shown) and "pw@" not in str(shown)
    assert shown["store"] == "postgresql://parlour:***@db:5432/chat"
    s = load_settings(env={"PARLOUR_STORE": "postgresql://db/chat"}, flags={"bus": "memory"})
    assert s.postgres and not s.redis  # one node on PostgreSQL
    assert load_settings(env={"PARLOUR_STORE": "MEMORY"}).store == "memory"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PARLOUR_STORE": "mysql://db/chat"}, "not one of sqlite, memory or postgresql"),
        ({"PARLOUR_BUS": "nats://x"}, "not one of memory or redis"),
        ({"PARLOUR_BUS": "redis://cache:6379/0"}, "need one shared store"),
        ({"PARLOUR_STORE": "postgresql://u:hunter2@db/x", "PARLOUR_PG_POOL": "1"}, "at least 2"),
    ],
)
def test_bad_store_or_bus(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)


def test_a_missing_cluster_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from parlour.server import app

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "asyncpg" else real(name)
    )
    s = load_settings(env={"PARLOUR_STORE": "postgresql://db/chat"})
    with pytest.raises(ValueError) as info:
        app.open_store(s)
    assert "pip install 'parlour[cluster]'" in str(info.value)
    assert "asyncpg" in str(info.value)
