"""Launchers that start adrizzle workers with the cluster managers people already run.

- ``python -m adrizzle.deploy.slurm PROGRAM.py``: a driver and its workers in a SLURM
  allocation (``srun -n N+1`` or an ``sbatch`` script);
- ``await adrizzle.deploy.dask.start_workers(client, engine)``: one worker per Dask worker
  (extra ``adrizzle[dask]``);
- ``await adrizzle.deploy.ray.start_workers(engine, n)``: workers in Ray actors (extra
  ``adrizzle[ray]``);
- ``workers/kubernetes/``: a kustomize base (no Python needed).

Each launched worker runs ``adrizzle-worker --connect-retry``, so the order in which the
manager starts things does not matter. The Dask and Ray modules import their manager only
when used; this package itself needs nothing beyond adrizzle's own dependencies.
"""

from __future__ import annotations

from adrizzle.deploy.driver import driver_engine, expected_workers
from adrizzle.deploy.workers import WorkerSet

__all__ = ["WorkerSet", "driver_engine", "expected_workers"]
