"""Where `hello` says the web listener is (`web_url`, `web_port`): clients of the TCP door
find the files endpoints there instead of guessing."""

from __future__ import annotations

from parlour.transports.web import web_location


def test_a_listener_on_one_address_has_an_absolute_url() -> None:
    assert web_location("127.0.0.1", 41234, tls=False, public=None) == (
        "http://127.0.0.1:41234/",
        41234,
    )
    assert web_location("::1", 8443, tls=True, public=None) == ("https://[::1]:8443/", 8443)


def test_a_listener_on_every_address_gives_only_its_port() -> None:
    assert web_location("0.0.0.0", 8080, tls=False, public=None) == (None, 8080)
    assert web_location("::", 8080, tls=False, public=None) == (None, 8080)


def test_the_public_origin_wins() -> None:
    public = "https://chat.example.org"
    assert web_location("0.0.0.0", 8080, tls=False, public=public) == (public + "/", 8080)
