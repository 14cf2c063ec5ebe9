"""examples/word_count.py as a user runs it: a real subprocess, counts checked exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "word_count.py"
sys.path.insert(0, str(EXAMPLE.parent))
from word_count import expected_counts  # noqa: E402


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
