"""``python -m adrizzle.worker`` is the same as ``adrizzle-worker``."""

from adrizzle.worker.cli import main

raise SystemExit(main())
