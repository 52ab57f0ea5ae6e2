"""The live-latency figures leave the start-up out of p50/p99 and report it beside them."""

from __future__ import annotations

from svoe.bench.live_latency import WARMUP_SECONDS, quantiles


def test_steady_state_quantiles_leave_the_warm_up_out() -> None:
    # One sample per 10 ms over 10 s: 1 s late during the warm-up, 5 ms after it.
    samples = [(100 + i / 100, 1.0 if i / 100 < WARMUP_SECONDS else 0.005) for i in range(1000)]
    q = quantiles(samples)
    assert q["p50"] == q["p99"] == 5.0
    assert q["p99_with_startup"] == 1000.0
    assert q["samples"] == 1000 - int(WARMUP_SECONDS * 100)


def test_no_samples_give_nan_not_an_error() -> None:
    q = quantiles([])
    assert q["samples"] == 0 and q["p99"] != q["p99"]
