"""The shipped example TOML file loads and matches the defaults."""

from pathlib import Path

from parlour.server.config import Settings, load_settings

ROOT = Path(__file__).parents[2]


def test_example_config_is_valid_and_equals_defaults() -> None:
    s = load_settings(config_file=ROOT / "parlour.example.toml", env={})
    assert s == Settings()
