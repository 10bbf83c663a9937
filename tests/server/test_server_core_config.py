"""The server's settings reach the core: every knob the core has a setting for is passed on."""

from __future__ import annotations

import dataclasses

from parlour.core.config import CoreConfig
from parlour.server.app import core_config
from parlour.server.config import Settings


def test_defaults_agree() -> None:
    """The server's defaults and the core's defaults describe the same server."""
    core, server = core_config(Settings()), Settings()
    assert core.rate_burst == server.burst == CoreConfig().rate_burst
    assert core.rate_per_second == server.rate == CoreConfig().rate_per_second
    assert core.password_min_length == server.min_password == CoreConfig().password_min_length
    assert core.max_message_length == server.max_message == CoreConfig().max_message_length
    assert core.presence_window == server.presence_window == CoreConfig().presence_window
    assert core.max_frame == server.max_frame == CoreConfig().max_frame
    assert core.default_rooms == tuple(server.default_rooms) == CoreConfig().default_rooms


def test_settings_are_passed_on() -> None:
    s = dataclasses.replace(
        Settings(),
        min_password=12,
        lockout_attempts=5,
        lockout_seconds=30.0,
        duplicate_login="allow",
        history_on_join=7,
        max_message=100,
        rate=3.0,
        burst=4,
        presence_window=60.0,
        heartbeat=5.0,
        max_frame=32768,
        default_rooms=("a", "b"),
    )
    c = core_config(s)
    assert (c.password_min_length, c.lockout_threshold, c.lockout_seconds) == (12, 5, 30.0)
    assert (c.duplicate_login, c.join_history, c.max_message_length) == ("allow", 7, 100)
    assert (c.rate_per_second, c.rate_burst, c.presence_window) == (3.0, 4.0, 60.0)
    assert (c.heartbeat_s, c.max_frame, c.default_rooms) == (5.0, 32768, ("a", "b"))


def test_catch_up_fits_the_send_queue() -> None:
    small = dataclasses.replace(Settings(), send_queue_max=65536)
    assert core_config(small).catch_up_bytes == 32768
    assert core_config(Settings()).catch_up_bytes <= Settings().send_queue_max // 2
