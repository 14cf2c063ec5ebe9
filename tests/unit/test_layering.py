"""The layering rule, enforced by parsing every import in adrizzle/ (docs/architecture.md).

plan/ and wire/ import only adrizzle.errors (and themselves); driver/ and worker/ import
plan/ and wire/ and never each other; api/ sits on driver/; nothing imports api/ except
adrizzle/__init__.py (status/ gets a snapshot callable, examples and scripts use the package).
Imports inside functions and under TYPE_CHECKING count too: a circle hidden behind a late
import is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "adrizzle"

# Importer (the first part under adrizzle/, or a top-level module) -> what it may import.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "version": set(),
    "progress": set(),
    "plan": {"plan", "errors"},
    "wire": {"wire", "errors"},
    "driver": {"driver", "plan", "wire", "errors"},
    "worker": {"worker", "plan", "wire", "errors"},
    "status": {"status", "wire", "errors"},
    "connectors": {"connectors", "plan", "errors"},
    "deploy": {"deploy", "wire", "errors", "root"},  # the public API, as a user would
    "api": {"api", "driver", "plan", "wire", "errors", "status", "connectors"},
}


LEAVES = {"errors", "version"}  # any layer may import these


SUBMODULES = {
    p.stem for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()
}


def part_of(module: str) -> str:
    """``adrizzle.driver.cluster`` -> ``driver``; ``adrizzle`` -> ``root``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "root"


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "adrizzle":  # from adrizzle import errors (a module), Engine (root)
                found += [
                    (node.lineno, f"adrizzle.{a.name}" if a.name in SUBMODULES else "adrizzle")
                    for a in node.names
                ]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import at line {node.lineno}")
    return [(line, m) for line, m in found if m == "adrizzle" or m.startswith("adrizzle.")]


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py")


def layer_of(path: Path) -> str | None:
    rel = path.relative_to(PACKAGE)
    if rel == Path("__init__.py"):
        return None  # the public API re-exports everything
    return rel.parts[0].removesuffix(".py")


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_imports_point_down(path: Path) -> None:
    layer = layer_of(path)
    if layer is None:
        return
    assert layer in ALLOWED, f"{layer}/ is not a known layer: add it to ALLOWED and the docs"
    allowed = ALLOWED[layer]
    wrong = [
        f"line {line}: {module}"
        for line, module in imports_of(path)
        if part_of(module) not in allowed | LEAVES
    ]
    assert not wrong, f"{path.relative_to(PACKAGE.parent)} ({layer}/) imports {wrong}"


def test_the_rule_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from adrizzle.api.engine import Engine\n"
        "def f():\n    import adrizzle.driver.cluster\n"
    )
    found = [part_of(m) for _line, m in imports_of(bad)]
    assert found == ["api", "driver"]


def test_no_module_is_over_500_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in modules()
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert not long, f"split these by concern: {long}"
