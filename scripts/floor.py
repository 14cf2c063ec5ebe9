"""The hand-written floors (``adrizzle_bench.floor``): ``python scripts/floor.py``.

A single-stage group-scheduled loop and a pre-scheduled shuffle of the same shape as adrizzle,
with nothing else paid; ``bench.py single-stage``, ``shuffle`` and ``peers`` report ratios to
them from the same run.
"""

from __future__ import annotations

from adrizzle_bench.floor import main

if __name__ == "__main__":
    main()
