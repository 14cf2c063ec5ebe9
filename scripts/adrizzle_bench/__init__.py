"""adrizzle's benchmarks: one module per ``scripts/bench.py`` sub-command and one harness.

- ``harness``: environment, percentiles, timing, memory, plots and the results files;
- ``cli``: the command line (``scripts/bench.py`` and ``python -m adrizzle_bench``);
- one module per sub-command: ``single_stage``, ``shuffle``, ``recovery``, ``streaming``,
  ``scaling``, ``peers``, ``checkpoint_cost``, ``soak`` (its verdict and report in
  ``soak_report``);
- what they share: ``ysb_workload`` (YSB; examples/ysb.py runs it too), ``peer_engines`` (Dask,
  Ray and PySpark on the same workloads), ``floor`` (the hand-written group-scheduled loop);
- ``scaling`` has two more modes: ``scaling_sim`` (``--simulated``: simulated workers that speak
  the real protocol, ``simworkers`` with ``sim_process``, ``sim_worker`` and ``sim_plans``) and
  ``scaling_hosts`` (``--hosts``: real workers on network namespaces, ``netns``, with the
  ``delay_proxy`` that injects round-trip time).

The package is installed with adrizzle (pyproject.toml maps it from scripts/adrizzle_bench/),
so scripts, tests, examples and the local workers' slots import it by name. It imports nothing
here: ``peer_engines`` runs under interpreters that may lack adrizzle.
"""
