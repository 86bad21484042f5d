"""The one timing harness of the benchmarks: interleaved repeats, medians with their range, and the load.

Timings on a shared CPU drift with whatever else runs, so a benchmark here never times one implementation
and then the next: `interleave` warms every implementation up first (compilation, caches, thread pools),
then runs them in alternating order (A B C, C B A, A B C, ...) for `repeats` rounds, so that a change in the
machine's load during the run lands on every implementation alike. The headline is the median of the
repeats; the range (min-max) is printed next to it so that two runs can be compared: two runs of a quiet
machine should agree within their printed ranges.

`Machine` records the 1-minute load average before and after and says, in one line, when the load at the
start exceeded 0.5 (the numbers are then not those of a quiet machine and should not be quoted).

Peers keep their default threading, which on this project's CPU machines means all cores, as gl_jax's XLA
does: `same_cores_note()` says so in the printed header, and a benchmark that offers fewer threads to a
peer must print that row apart from the headline.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping

QUIET_LOAD = 0.5


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall times of one implementation's timed repeats, in seconds."""

    times: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def low(self) -> float:
        return min(self.times)

    @property
    def high(self) -> float:
        return max(self.times)

    def cell(self, *, scale: float = 1.0, digits: int = 3) -> str:
        """`median (low-high)` of `scale * times`, e.g. `1.234 (1.201-1.310)`."""
        med, low, high = (f"{scale * v:.{digits}f}" for v in (self.median, self.low, self.high))
        return f"{med} ({low}-{high})"


def interleave(
    fns: Mapping[str, Callable[[], object]],
    *,
    repeats: int = 5,
    warmup: int = 1,
    pause_s: float = 0.1,
    timer: Callable[[], float] = time.perf_counter,
) -> dict[str, Timing]:
    """Times each callable `repeats` times, interleaved, after `warmup` untimed calls each.

    Args:
      fns: name -> a callable that runs the work once and blocks until it is done (e.g. ends in
        `jax.block_until_ready`). A callable that returns a float is taken to have timed itself (a worker
        in another process, say) and that float is its time.
      repeats: timed calls per implementation (at least 1; 5 or more for a quoted number).
      warmup: untimed calls per implementation before any timed one.
      pause_s: idle seconds before each timed call: thread pools keep spinning for a while after their work
        (libgomp's OpenMP threads under PyTorch, XLA's Eigen pool), and would otherwise take cores from the
        implementation timed next in the same process.
      timer: the clock (seconds).

    Returns:
      name -> `Timing` of its `repeats` calls, in the order of `fns`.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: time each implementation at least once")
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            time.sleep(pause_s)
            start = timer()
            out = fns[name]()
            elapsed = timer() - start
            times[name].append(float(out) if isinstance(out, float) else elapsed)
    return {name: Timing(tuple(times[name])) for name in names}


def ratio_cell(ours: Timing, peer: Timing) -> str:
    """Speed-up of `ours` over `peer`: the ratio of medians, with the range of ratios of extremes."""
    return f"{peer.median / ours.median:.2f}x ({peer.low / ours.high:.2f}-{peer.high / ours.low:.2f})"


class Machine:
    """The load average before and after a benchmark; warns on stderr when the start is not quiet."""

    def __init__(self, *, settle_s: float = 150.0) -> None:
        """Reads the load, first waiting up to `settle_s` for it to fall to QUIET_LOAD.

        The 1-minute load average decays with a one-minute time constant: right after a previous benchmark
        (or the same one run twice in a row) it still reads ~2 on an idle machine for a minute or two.
        """
        deadline = time.monotonic() + settle_s
        if os.getloadavg()[0] > QUIET_LOAD and settle_s > 0:
            print(
                f"waiting up to {settle_s:.0f} s for the load average to fall to {QUIET_LOAD}",
                file=sys.stderr,
            )
        while os.getloadavg()[0] > QUIET_LOAD and time.monotonic() < deadline:
            time.sleep(5)
        self.before = os.getloadavg()
        self.after: tuple[float, float, float] | None = None
        if self.before[0] > QUIET_LOAD:
            print(
                f"warning: load average {self.before[0]:.2f} > {QUIET_LOAD} at the start: these timings are "
                "not those of a quiet machine; do not quote them (stop other jobs and rerun).",
                file=sys.stderr,
            )

    def stop(self) -> None:
        self.after = os.getloadavg()

    def line(self) -> str:
        """One header line: cores, nice, load before/after."""
        after = self.after or os.getloadavg()
        fmt = lambda avg: "/".join(f"{v:.2f}" for v in avg)
        quiet = "quiet" if self.before[0] <= QUIET_LOAD else "NOT quiet"
        return (
            f"{os.cpu_count()} CPU cores, nice {os.nice(0)}; load average (1/5/15 min) before "
            f"{fmt(self.before)} ({quiet}), after {fmt(after)}"
        )


def same_cores_note() -> str:
    """Says how the peers are threaded (their defaults: all cores, as gl_jax's XLA)."""
    try:
        import torch

        threads = f"PyTorch {torch.get_num_threads()} intra-op thread(s) (its default)"
    except ImportError:
        threads = "PyTorch not installed"
    return f"every implementation on the same {os.cpu_count()} cores: {threads}"


def table(header: tuple[str, ...], rows: list[tuple]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
