"""``bench.py soak``'s pure parts: the stream's plain-Python check, the flags, and (in
soak_report) the memory verdict, the summary and its markdown, on synthetic records. The real
run is in tests/integration/test_bench_soak.py."""

from __future__ import annotations

import argparse

import pytest

from adrizzle_bench import soak, soak_report


def stream_values(batches: int) -> list[list[tuple[int, int]]]:
    """What a correct stream delivers: after batch b, every key's total over batches 0..b."""
    totals: dict[int, int] = {}
    out = []
    for b in range(batches):
        for p in range(soak.PARTITIONS):
            for x in soak.numbers(b, p):
                k, v = soak.keyed(x)
                totals[k] = soak.add_up([v], totals.get(k))
        out.append(sorted(totals.items()))
    return out


def test_a_correct_stream_passes_the_check_batch_by_batch() -> None:
    check = soak.RunningSums()
    for b, values in enumerate(stream_values(5)):
        assert len(values) == soak.KEYS  # every batch touches every key
        assert check.check(b, values) is None
    assert check.next_batch == 5


def test_a_wrong_total_a_repeated_and_a_skipped_batch_are_problems() -> None:
    good = stream_values(6)
    check = soak.RunningSums()
    assert check.check(0, good[0]) is None
    wrong = [(k, v + (k == 3)) for k, v in good[1]]
    assert check.check(1, wrong) == "batch 1: the totals of keys [3] differ from plain Python"
    assert check.check(1, good[1]) == "batch 1 delivered again (batch 2 was next)"
    assert check.check(3, good[3]) == "batch 3 delivered where 2 was next"
    # ... and the check stays in step with the source: the next batch is judged on its own.
    assert check.check(4, good[4]) is None


def test_rss_growth_under_ten_percent_passes_at_or_over_fails() -> None:
    mib = 2**20
    ok = soak_report.rss_verdict(100 * mib, 109 * mib)
    assert ok["start_mib"] == pytest.approx(100.0)
    assert ok["end_mib"] == pytest.approx(109.0)
    assert ok["growth_percent"] == pytest.approx(9.0)
    assert ok["ok"]
    assert not soak_report.rss_verdict(100 * mib, 110 * mib)["ok"]
    assert soak_report.rss_verdict(100 * mib, 80 * mib)["ok"]  # shrinking is fine
    assert not soak_report.rss_verdict(None, 80 * mib)["ok"]  # never measured: not a pass


def record(**changes: object) -> soak_report.Record:
    mib = 2**20
    rec = soak_report.Record(minutes=10.0, engines=20, kill_every=30.0, shape=soak.SHAPE)
    rec.engines_run, rec.runs, rec.batches = 20, 60, 123_456
    rec.kills = ["local-1", "local-3"]
    rec.recoveries = 2
    rec.longest_pause_s, rec.slowest_run_s = 1.25, 0.5
    rec.rss = {
        "driver": {"start": 80 * mib, "end": 84 * mib},
        "workers": {"start": 150 * mib, "end": 151 * mib},
    }
    rec.workers_measured = (3, 3)
    rec.python_blocks = {"start": 100_000, "end": 101_000}
    rec.rss_timeline = [(0.0, 80 * mib, 150 * mib), (60.0, 82 * mib, 149 * mib)]
    rec.busy, rec.load = 3, (1.5, 4.25)
    for key, value in changes.items():
        setattr(rec, key, value)
    return rec


def test_a_clean_soak_passes_and_says_so_in_markdown() -> None:
    s = soak_report.summarize(record())
    assert s["passed"]
    assert s["exact"]
    assert (s["stalls"], s["kills"], s["recoveries"], s["batches"]) == (0, 2, 2, 123_456)
    assert s["rss"]["driver"]["growth_percent"] == pytest.approx(5.0)
    text = "\n".join(soak_report.render(s))
    assert "| 20/20 | 0 | 2 | 2 | 0 | 123456 | yes | 1.250 | 0.500 | 1.50 -> 4.25 |" in text
    assert "| driver (this process) | 80.0 | 84.0 | +5.0 % | yes |" in text
    assert "| stream engine's workers + slots | 150.0 | 151.0 | +0.7 % | yes |" in text
    assert "local-1, local-3" in text
    assert "Verdict: **pass**" in text
    assert "100000 -> 101000 (+1.0 %)" in text
    assert "driver / workers MiB): 0: 80.0 / 150.0; 60: 82.0 / 149.0" in text
    assert "- machine:" in text


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"stall_count": 1, "stalls": ["engine 3 shuffle took 12.0 s"]}, "Stalls: engine 3"),
        ({"problem_count": 1, "problems": ["batch 7: the totals"]}, "Problems: batch 7"),
        (
            {"rss": {"driver": {"start": 100, "end": 111}, "workers": {"start": 1, "end": 1}}},
            "**no**",
        ),
        ({"engines_run": 19}, "| 19/20 |"),
        ({"batches": 0}, "| 0 | **no** (0 problems) |"),
    ],
)
def test_a_stall_a_wrong_answer_growth_or_a_missing_engine_fails(
    changes: dict[str, object], why: str
) -> None:
    s = soak_report.summarize(record(**changes))
    assert not s["passed"]
    text = "\n".join(soak_report.render(s))
    assert "Verdict: **FAIL**" in text
    assert why in text


def test_quick_and_explicit_flags() -> None:
    full = soak.settings(
        argparse.Namespace(quick=False, minutes=None, engines=None, kill_every=None)
    )
    assert (full.minutes, full.engines, full.kill_every) == (10.0, 20, 30.0)
    quick = soak.settings(
        argparse.Namespace(quick=True, minutes=None, engines=None, kill_every=None)
    )
    assert quick.minutes == 1.0
    mine = soak.settings(argparse.Namespace(quick=True, minutes=0.3, engines=2, kill_every=6.0))
    assert (mine.minutes, mine.engines, mine.kill_every) == (0.3, 2, 6.0)
    with pytest.raises(SystemExit, match="must be > 0"):
        soak.settings(argparse.Namespace(quick=False, minutes=0, engines=1, kill_every=1))
