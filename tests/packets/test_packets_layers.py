"""The packet lab's subpackages form layers (docs/design/packets-structure.md): a module imports
only from its own layer or the ones below, and nothing from the chat code."""

from __future__ import annotations

import ast
from pathlib import Path

import parlour.packets

ROOT = Path(parlour.packets.__file__).resolve().parent
#: layer -> the layers its modules may import from (besides itself)
ALLOWED = {
    "wire": set(),
    "files": {"wire"},
    "build": {"wire", "files"},
    "capture": {"wire", "files", "build"},  # replay plays built messages
    "analyze": {"wire", "files", "build"},  # explain narrates built packets
    "cli": {"wire", "files", "build", "capture", "analyze"},
}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "parlour"}


def test_every_module_is_in_a_layer() -> None:
    loose = [p.name for p in ROOT.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside the layers: {loose}"
    assert {p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(
        ALLOWED
    )


def test_imports_go_down_the_layers_only() -> None:
    wrong = []
    for layer, below in ALLOWED.items():
        for path in sorted((ROOT / layer).glob("*.py")):
            for name in imports(path):
                parts = name.split(".")
                if parts[:2] != ["parlour", "packets"]:
                    wrong.append((path.name, name, "outside the packet lab"))
                elif len(parts) > 2 and parts[2] != layer and parts[2] not in below:
                    wrong.append((f"{layer}/{path.name}", name, "an upper layer"))
    assert not wrong, wrong
