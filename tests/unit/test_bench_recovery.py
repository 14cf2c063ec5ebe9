"""``bench.py recovery``'s pure parts: when a run counts as recovered, what is exact, the table
and the plot, on synthetic per-batch traces (the real runs are in
tests/integration/test_bench_recovery.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from adrizzle_bench import harness
from adrizzle_bench import recovery as br

INTERVAL = 0.01
T0 = 1_000_000.0


def trace_with_stall(
    batches: int = 400,
    kill_batch: int = 200,
    stall: float = 0.5,
    spikes: dict[int, float] | None = None,
) -> br.Trace:
    """3 ms per batch; after ``kill_batch`` nothing arrives for ``stall`` s, then the backlog
    drains at 1 ms per batch. ``spikes``: batch -> extra latency (s), single-batch jitter."""
    trace = br.Trace("running sum", 10, batches, INTERVAL, kill_batch, victim="local-1")
    resume = T0 + (kill_batch + 1) * INTERVAL + stall
    previous = 0.0
    for b in range(batches):
        due = T0 + (b + 1) * INTERVAL
        done = due + 0.003 + (spikes or {}).get(b, 0.0)
        if b > kill_batch:
            done = max(done, resume + (b - kill_batch - 1) * 0.001)
        done = max(done, previous)
        previous = done
        trace.numbers.append(b)
        trace.latency.append(done - due)
        trace.done_at.append(done)
        if b == kill_batch:
            trace.kill_time = done + 0.0001
    assert trace.kill_time is not None
    trace.log = [
        (trace.kill_time + 0.0005, "data link local-0 <-> local-2 lost: re-running groups [1]"),
        (trace.kill_time + 0.001, "data link local-0 <-> local-1 lost: re-running groups [1]"),
        (trace.kill_time + 0.002, "worker local-1 lost: connection closed by peer"),
    ]
    return trace


def test_recovery_is_when_latency_is_back_within_2x_and_stays() -> None:
    trace = trace_with_stall()
    row = br.summarize(trace)
    assert row["exact"]
    assert row["normal_ms"] == pytest.approx(3.0)
    assert row["detected_s"] == pytest.approx(0.001)  # the first warning naming local-1
    assert row["worst_ms"] == pytest.approx(490.0)  # the first batch due after the kill
    assert row["worst_at_s"] == pytest.approx(0.5 - 0.0031)  # kill: 3.1 ms after batch 200 due
    assert row["longest_gap_ms"] == pytest.approx(497.0)  # from batch 200 (3 ms late) on
    # The backlog drains 9 ms faster per batch than it was due: latency is back under 6 ms
    # about 0.5 / 0.009 = 56 batches after the kill (plus the 9-batch median's delay).
    back = row["recovered_batch"] - trace.kill_batch
    assert 50 <= back <= 66
    i = trace.numbers.index(row["recovered_batch"])
    assert row["recovery_s"] == pytest.approx(trace.done_at[i] - trace.kill_time)
    assert row["from_detection_s"] == pytest.approx(row["recovery_s"] - 0.001)
    assert row["during_batches"] == back - 1
    assert row["p50_after_ms"] == pytest.approx(3.0)


def test_single_batch_jitter_neither_delays_nor_fakes_a_recovery() -> None:
    jitter = dict.fromkeys(range(0, 400, 37), 0.02)  # a 20 ms batch every 370 ms
    quiet = br.summarize(trace_with_stall(stall=0.0, spikes=jitter))
    assert quiet["recovery_s"] < 0.05  # nothing to recover from: back at once
    stalled = br.summarize(trace_with_stall(spikes=jitter))
    clean = br.summarize(trace_with_stall())
    # A spike while the backlog drains shifts the 9-batch median by a rank at most.
    assert abs(stalled["recovered_batch"] - clean["recovered_batch"]) <= 2
    assert stalled["later_over"] > 0  # the jitter after recovery is counted, not hidden
    assert stalled["worst_ms"] == pytest.approx(490.0)  # ... but is not the failure's worst
    assert quiet["worst_ms"] == pytest.approx(23.0)  # jitter within the hold still counts


def test_latency_that_never_settles_is_not_a_recovery() -> None:
    trace = trace_with_stall(batches=260, kill_batch=200, stall=2.0)  # still draining at the end
    row = br.summarize(trace)
    assert row["recovery_s"] is None
    assert row["from_detection_s"] is None
    cells = br.table([row])[2].split(" | ")
    assert cells[7:9] == ["-", "-"]  # kill -> back, detected -> back


def test_recovered_index_needs_the_whole_hold_window() -> None:
    done = [i * 0.1 for i in range(30)]
    latency = [1.0] * 30
    latency[12] = 5.0
    assert br.recovered_index(latency, done, 0, 2.0, hold=0.5) == 0  # 12 is 1.2 s later
    assert br.recovered_index(latency, done, 10, 2.0, hold=0.5) == 13
    assert br.recovered_index(latency, done, 10, 2.0, hold=0.05) == 10
    assert br.recovered_index([5.0] * 5, done[:5], 0, 2.0, hold=0.5) is None


def test_a_stall_is_not_a_hold_without_late_batches() -> None:
    # Batch 3 arrives on time, then nothing for 1.5 s: batches 4.. (due every 0.1 s) come late.
    due = [i * 0.1 for i in range(40)]
    done = [d + 0.005 for d in due[:4]] + [max(1.9, d + 0.005) for d in due[4:]]
    latency = [d - u for d, u in zip(done, due, strict=True)]
    # Judged by deliveries alone, the empty second after batch 3 looks like a quiet hold ...
    assert br.recovered_index(latency, done, 3, 0.01, hold=1.0) == 3
    # ... judged by when batches were due, recovery waits for the first on-time batch.
    back = br.recovered_index(latency, done, 3, 0.01, hold=1.0, due=due)
    assert back is not None
    assert latency[back] <= 0.01
    assert done[back] > 1.9


def test_the_recorder_flags_a_batch_out_of_order_or_twice() -> None:
    engine = SimpleNamespace(workers=[{"id": "local-0", "pid": None}, {"id": "local-1"}])
    trace = br.Trace("YSB", 1, 4, INTERVAL, kill_batch=None)
    record = br.Recorder(engine, trace, 0)  # type: ignore[arg-type]
    for b in (0, 1, 1, 3):
        record(SimpleNamespace(batch=b, latency=0.003, done_at=T0 + b))  # type: ignore[arg-type]
    br.finish(trace)
    assert trace.problems == [
        "batch 1 delivered where 2 was next",
        "batch 3 delivered where 2 was next",
        "4 batches delivered (3 distinct), 4 expected",
    ]
    row = br.summarize(trace)
    assert not row["exact"]
    assert "recovery_s" not in row  # no kill, nothing to recover from
    assert "**NO**: batch 1 delivered where 2 was next" in br.table([row])[2]


def test_table_and_plot(tmp_path: Path) -> None:
    rows = [br.summarize(trace_with_stall()), br.summarize(trace_with_stall(stall=1.0))]
    rows[1]["workload"] = "YSB"
    lines = br.table(rows)
    assert len(lines) == 4
    assert lines[2].startswith("| running sum | 10 | 400/400 | 3.0 / 3.0 |")
    assert "| yes |" in lines[2]
    png = br.plot(rows, tmp_path / "recovery.png")
    if harness.have_matplotlib():
        assert png is not None
        assert png.stat().st_size > 10_000
    else:
        assert png is None
