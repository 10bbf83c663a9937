"""The web listener's settings: defaults, parsing, validation, and the start-up line."""

from __future__ import annotations

import pytest

from parlour.server.config import ConfigError, Settings, load_settings


def test_web_port_follows_the_chat_port() -> None:
    assert Settings().web_listen_port == 7879
    assert Settings(port=9000).web_listen_port == 9001
    assert Settings(port=0).web_listen_port == 0
    assert Settings(port=9000, web_port=8080).web_listen_port == 8080
    assert Settings(host="0.0.0.0").web_listen_host == "0.0.0.0"
    assert Settings(web_host="127.0.0.2").web_listen_host == "127.0.0.2"


def test_web_settings_from_env_and_flags() -> None:
    s = load_settings(
        env={"PARLOUR_WEB": "no", "PARLOUR_PUBLIC_URL": "https://chat.example.org"},
        flags={"web_port": "8443"},
    )
    assert (s.web, s.web_port, s.public_url) == (False, 8443, "https://chat.example.org")
    assert load_settings(env={"PARLOUR_WEB": "TRUE"}).web is True
    assert load_settings(env={"PARLOUR_WEB_PORT": ""}).web_port is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PARLOUR_WEB": "maybe"}, "expected true or false"),
        ({"PARLOUR_WEB_PORT": "70000"}, "web_port: must be at most 65535"),
        ({"PARLOUR_WEB_PORT": "-1"}, "must be at least 0"),
        ({"PARLOUR_WEB_PORT": "7878"}, "is the chat port"),
        ({"PARLOUR_PUBLIC_URL": "chat.example.org"}, "expected an http:// or https:// URL"),
        ({"PARLOUR_PUBLIC_URL": "ftp://chat.example.org"}, "expected an http:// or https:// URL"),
    ],
)
def test_bad_web_settings_are_refused_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)
