"""Where `hello` says the web listener is (`web_url`, `web_port`): clients of the TCP door
find the files endpoints there instead of guessing."""

from __future__ import annotations

import ssl

from parlour.server.app import web_location
from parlour.server.config import Settings


def test_a_listener_on_one_address_has_an_absolute_url() -> None:
    s = Settings(port=7000, web_port=0)
    assert web_location(s, [("127.0.0.1", 41234)], None) == ("http://127.0.0.1:41234/", 41234)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    assert web_location(s, [("::1", 8443)], tls) == ("https://[::1]:8443/", 8443)


def test_a_listener_on_every_address_gives_only_its_port() -> None:
    s = Settings(port=7000, web_port=0)
    assert web_location(s, [("0.0.0.0", 8080)], None) == (None, 8080)
    assert web_location(s, [("::", 8080)], None) == (None, 8080)


def test_the_public_url_wins() -> None:
    s = Settings(port=7000, web_port=0, public_url="https://chat.example.org/")
    assert web_location(s, [("0.0.0.0", 8080)], None) == ("https://chat.example.org/", 8080)
