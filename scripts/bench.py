"""adrizzle benchmarks: ``python scripts/bench.py SUB-COMMAND [flags]`` (``--help`` lists them).

The benchmarks are the ``adrizzle_bench`` package (scripts/adrizzle_bench/, installed with
adrizzle); this file is its command line's stable path, which other tools call.
"""

from __future__ import annotations

from adrizzle_bench.cli import main

if __name__ == "__main__":
    main()
