import subprocess
import sys

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


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )


def test_a_subcommand_whose_extra_is_missing_says_how_to_install_it() -> None:
    hide = "import sys; sys.modules['httptools'] = None; sys.argv[0] = 'parlour'"
    done = _run(f"{hide}; from parlour.cli.main import main; main()", "proxy", "-b", "x:1")
    assert done.returncode == 1
    assert "pip install 'parlour[proxy]'" in done.stderr and "httptools" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_chat_part_needs_no_proxy_or_packet_lab_dependency() -> None:
    code = (
        "import sys\n"
        "for m in ('httptools', 'prometheus_client', 'matplotlib', 'asyncpg', 'redis'):\n"
        "    sys.modules[m] = None\n"
        "import parlour.server.app, parlour.server.cli, parlour.cli.chat, parlour.client\n"
        "print('ok')\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_scale_out_without_its_extra_says_how_to_install_it() -> None:
    hide = "import sys; sys.modules['asyncpg'] = None; sys.argv[0] = 'parlour'"
    done = _run(f"{hide}; from parlour.cli.main import main; main()", "cluster")
    assert done.returncode == 1
    assert "pip install 'parlour[cluster,proxy]'" in done.stderr and "asyncpg" in done.stderr
    serve = _run(
        f"{hide}; from parlour.cli.main import main; main()",
        "serve", "--store", "postgresql://u:secret@127.0.0.1:1/x", "--port", "0",
    )  # fmt: skip
    assert serve.returncode == 1
    assert "pip install 'parlour[cluster]'" in serve.stderr
    assert "Traceback" not in serve.stderr and "secret" not in serve.stderr + serve.stdout
