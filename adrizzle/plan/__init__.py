"""The plan layer: pure code the driver plans with and the slots execute (no I/O, no clocks
but a paced source's due time). It imports only ``adrizzle.errors``, the standard library and
cloudpickle-free third-party code; ``driver/`` and ``worker/`` both build on it."""
