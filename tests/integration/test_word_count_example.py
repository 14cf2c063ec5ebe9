"""examples/word_count.py as a user runs it: a real subprocess, counts checked exactly."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "word_count.py"


def load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_example(path: Path) -> ModuleType:
    """The example file as a module, loaded from its path: examples are standalone scripts
    (not a package), and this is the very file the subprocess runs. Their shared command line
    (examples/_cli.py, found next to the script when it runs) is loaded the same way."""
    sys.modules.setdefault("_cli", load_module("_cli", path.parent / "_cli.py"))
    return load_module(f"example_{path.stem}", path)


expected_counts = load_example(EXAMPLE).expected_counts


@pytest.mark.parametrize(("group_size", "mode"), [(4, []), (1, ["--bsp"]), ("auto", [])])
def test_word_count_counts_every_word_exactly(group_size: int | str, mode: list[str]) -> None:
    batches, partitions, per_partition = 9, 3, 40
    out = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            str(batches),
            str(group_size),
            "--check",
            "--json",
            "--partitions",
            str(partitions),
            "--sentences",
            str(per_partition),
            *mode,
        ],
        capture_output=True,
        text=True,
        timeout=100,
        check=True,
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    # The example checks each batch itself; the total is re-derived here independently.
    assert summary["mismatches"] == 0
    assert summary["checked"] is True
    assert summary["total_words"] == sum(
        sum(expected_counts(b, partitions, per_partition).values()) for b in range(batches)
    )
