"""The benchmarks' timing harness: interleaved order, warm-up, medians and ranges, self-timed workers."""

import itertools

import pytest

from benchmarks import _timing


def test_interleave_alternates_the_order_after_warming_every_implementation_up():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    ticks = itertools.count()
    _timing.interleave(fns, repeats=3, warmup=2, pause_s=0.0, timer=lambda: float(next(ticks)))
    assert calls[:6] == list("aabbcc")  # Warm-up, untimed.
    assert calls[6:] == list("abccbaabc")


def test_timings_are_the_timer_differences_or_what_a_self_timed_worker_returns():
    clock = iter([0.0, 1.0, 1.0, 4.0, 4.0, 6.0, 6.0, 7.0, 7.0, 9.0, 9.0, 10.0])
    fns = {"ours": lambda: None, "worker": lambda: 0.25}
    out = _timing.interleave(fns, repeats=3, warmup=0, pause_s=0.0, timer=lambda: next(clock))
    # Rounds: ours 0->1, worker | worker, ours 6->7 | ours 7->9, worker; the worker's own 0.25 s each time.
    assert out["ours"].times == (1.0, 1.0, 2.0)
    assert out["worker"].times == (0.25, 0.25, 0.25)
    assert out["ours"].median == 1.0 and out["ours"].low == 1.0 and out["ours"].high == 2.0
    assert out["ours"].cell(scale=1e3, digits=0) == "1000 (1000-2000)"


def test_ratio_cell_is_the_ratio_of_medians_with_the_extremes():
    ours, peer = _timing.Timing((1.0, 2.0, 4.0)), _timing.Timing((3.0, 4.0, 8.0))
    assert _timing.ratio_cell(ours, peer) == "2.00x (0.75-8.00)"


def test_no_repeats_is_refused():
    with pytest.raises(ValueError, match="at least once"):
        _timing.interleave({"a": lambda: None}, repeats=0)
