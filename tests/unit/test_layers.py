"""DESIGN §2: dependencies point one way. ``spine`` imports nothing of ours; ``commands``
and ``projections`` import ``spine`` (and themselves); ``routing`` imports the protocols
it implements; ``engines`` wires everything."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"spine", "commands", "projections", "routing", "engines"}
ALLOWED = {
    "spine": {"spine"},
    "commands": {"spine", "commands"},
    "projections": {"spine", "projections"},
    "routing": {"spine", "commands", "projections", "routing"},
    "engines": OURS,
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_layers_beneath_it(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - ALLOWED[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {path: names for path, names in wrong.items() if names} == {}
