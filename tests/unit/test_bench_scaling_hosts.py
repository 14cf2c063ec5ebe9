"""``bench.py scaling --hosts N --rtt-ms X,...``'s flags and report: G=1 against G=100 per
RTT and the pulled-link recovery, judged against the issue's targets (scaling_hosts)."""

from __future__ import annotations

from typing import Any

import pytest

from adrizzle_bench import cli, scaling_hosts


def steady(rtt: float, g1: float, g100: float, hosts: int = 4) -> dict[str, Any]:
    return {
        "hosts": hosts,
        "rtt_ms": rtt,
        "repeats": 3,
        "g1_ms": g1,
        "g100_ms": g100,
        "g1_cpu_us": 300.0,
        "g100_cpu_us": 20.0,
        "g1_exact": True,
        "g100_exact": True,
        "speedup": g1 / g100,
    }


def pulled(rtt: float, back: float | None, exact: bool = True) -> dict[str, Any]:
    return {
        "rtt_ms": rtt,
        "batches": 500,
        "delivered": 500,
        "normal_ms": 4.0,
        "worst_ms": 1600.0,
        "detected_s": 1.6,
        "from_detection_s": back,
        "recoveries": 1,
        "exact": exact,
        "problems": [] if exact else ["batch 7 delivered where 6 was next"],
    }


def test_the_flags_parse_hosts_and_rtts() -> None:
    args = cli.make_parser().parse_args(["scaling", "--hosts", "4", "--rtt-ms", "0,0.5,2"])
    assert (args.hosts, args.rtt_ms) == (4, [0.0, 0.5, 2.0])
    with pytest.raises(SystemExit):
        cli.make_parser().parse_args(["scaling", "--hosts", "4", "--rtt-ms", "-1"])


def test_targets_at_two_ms_on_four_hosts_are_judged() -> None:
    rows = [steady(0.0, 1.0, 0.05), steady(2.0, 3.0, 0.2)]  # 15x at 2 ms: not met
    recs = [pulled(0.0, 0.3), pulled(2.0, 0.4)]
    text = "\n".join(scaling_hosts.report(rows, recs, {1: 200, 100: 1000}))
    assert "| 2 | 3.000 | 0.200 | 15.0x | 300 | 20 | yes |" in text
    assert "G=100 is 15.0x faster per micro-batch than G=1 (target ≥ 20x: not met)" in text
    assert "back within 2x normal 0.40 s after detection (target ≤ 2 s, exact: met)" in text


def test_a_recovery_that_is_not_exact_fails_the_target_whatever_its_speed() -> None:
    rows = [steady(2.0, 3.0, 0.1)]
    text = "\n".join(scaling_hosts.report(rows, [pulled(2.0, 0.2, exact=False)], {1: 1, 100: 1}))
    assert "exact NO" in text
    assert "(target ≤ 2 s, exact: not met)" in text
    assert "NO: batch 7 delivered where 6 was next" in text


def test_other_host_counts_do_not_claim_the_four_host_target() -> None:
    rows = [steady(2.0, 3.0, 0.1, hosts=3)]
    text = "\n".join(scaling_hosts.report(rows, [pulled(2.0, 0.2)], {1: 1, 100: 1}))
    assert "not measured in this run (needs --hosts 4 and 2 in --rtt-ms)" in text
