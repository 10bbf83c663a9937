from click.testing import CliRunner

from parlour import __version__
from parlour.cli.main import SUBCOMMANDS, cli


def test_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert name in result.output


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_unknown_subcommand_is_an_error() -> None:
    result = CliRunner().invoke(cli, ["nonsense"])
    assert result.exit_code != 0
    assert "No such command" in result.output
