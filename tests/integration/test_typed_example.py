"""examples/typed_pipeline.py: mypy --strict accepts it and catches a function that does not fit
the items; run as a user runs it, it prints the right report (issue 20 item 8)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "typed_pipeline.py"


def mypy(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )


def test_mypy_checks_the_typed_example_and_its_mistakes(tmp_path: Path) -> None:
    done = mypy(EXAMPLE)
    assert done.returncode == 0, done.stdout + done.stderr
    wrong = tmp_path / "wrong_pipeline.py"
    wrong.write_text(
        EXAMPLE.read_text().replace(
            "spent = orders.map(by_customer)", "spent = orders.map(country_of)"
        )
    )
    done = mypy(wrong)
    assert done.returncode == 1
    assert 'Argument 1 to "map" of "SyncDataset" has incompatible type' in done.stdout
    assert "Callable[[Customer], tuple[int, str]]" in done.stdout


def test_the_typed_example_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--orders", "500", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    revenue: dict[str, int] = {}
    countries = ("DE", "FR", "JP", "BR", "US")
    for i in range(500):
        country = countries[((i * 7) % 40) % 5]
        revenue[country] = revenue.get(country, 0) + 100 + (i * 37) % 900
    assert result["top"] == [list(kv) for kv in sorted(revenue.items(), key=lambda kv: -kv[1])][:3]
    assert result["without_orders"] == list(range(40, 50))
    assert result["orders"] == 500
