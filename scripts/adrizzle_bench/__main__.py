"""``python -m adrizzle_bench``: the same command line as ``scripts/bench.py``."""

from __future__ import annotations

from adrizzle_bench.cli import main

main()
