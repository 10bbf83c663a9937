"""The core is sans-I/O by construction: it imports no I/O, clock, thread or randomness module
and nothing of Parlour but the protocol and itself, and it holds no store or hasher.

(`parlour.core.passwords` is the default implementation of the `PasswordHasher` port, a leaf
the server wires in; no other core module may import it.)"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from parlour.core.service import ChatService

CORE = Path(__file__).resolve().parents[2] / "src" / "parlour" / "core"

#: modules that would let the core reach the outside world or read the clock
FORBIDDEN = {
    "asyncio",
    "concurrent",
    "os",
    "random",
    "secrets",
    "selectors",
    "socket",
    "sqlite3",
    "subprocess",
    "threading",
    "time",
    "argon2",
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


MODULES = sorted(p for p in CORE.rglob("*.py") if p.name != "passwords.py")


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(CORE)) for p in MODULES])
def test_core_module_imports_no_io_and_only_protocol_and_core(path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        assert top not in FORBIDDEN, f"{path.name} imports {name}"
        if top == "parlour":
            assert name.startswith(("parlour.core", "parlour.protocol")) or name == "parlour", name
            assert name != "parlour.core.passwords", f"{path.name} imports the Argon2 adapter"


def test_the_service_is_built_from_a_snapshot_and_holds_no_store_or_hasher() -> None:
    params = list(inspect.signature(ChatService.__init__).parameters)
    assert params == ["self", "snapshot", "config", "entropy"]  # randomness is passed in
    assert len(MODULES) >= 15  # the walk found the core (handlers included)
