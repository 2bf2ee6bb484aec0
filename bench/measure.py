"""Measuring on a noisy machine: interleaved batches, medians, percentiles, and the figure lines."""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One result: `name: value (target ...) met|MISSED`, then indented details."""

    name: str
    value: str
    target: str
    met: bool
    details: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        verdict = "met" if self.met else "MISSED"
        return [f"{self.name}: {self.value} (target {self.target}) {verdict}", *(f"  {line}" for line in self.details)]


@dataclass(frozen=True)
class Comparison:
    """Seconds per call of the measured code and of its floor (medians), and their ratio.

    The ratio is the median of the per-round ratios: each round times the two in adjacent batches,
    so a slow moment of the machine weighs on both sides of the same round.
    """

    measured: float
    floor: float
    ratio: float
    rounds: int
    calls: int


def time_batch(call: Callable[[], object], calls: int) -> float:
    """CPU seconds per call over `calls` calls, with the garbage collector paused as timeit does.

    The calls compute and never wait, so their cost is the CPU time of this thread: on a machine
    shared with other work, wall time would also count the moments the scheduler gave the core to
    another process, which moved ratios by ±0.3 between runs of the same hour.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        started = time.thread_time()
        for _ in range(calls):
            call()
        return (time.thread_time() - started) / calls
    finally:
        if collecting:
            gc.enable()


def compare(measured: Callable[[], object], floor: Callable[[], object], *, rounds: int, calls: int) -> Comparison:
    """Interleave batches of both (alternating which goes first) after a warm-up of each."""
    time_batch(measured, max(1, calls // 5))
    time_batch(floor, max(1, calls // 5))
    measured_times: list[float] = []
    floor_times: list[float] = []
    ratios: list[float] = []
    for round_number in range(rounds):
        gc.collect()
        if round_number % 2:
            floor_time = time_batch(floor, calls)
            measured_time = time_batch(measured, calls)
        else:
            measured_time = time_batch(measured, calls)
            floor_time = time_batch(floor, calls)
        measured_times.append(measured_time)
        floor_times.append(floor_time)
        ratios.append(measured_time / floor_time)
    return Comparison(
        measured=statistics.median(measured_times),
        floor=statistics.median(floor_times),
        ratio=statistics.median(ratios),
        rounds=rounds,
        calls=calls,
    )


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` 0.5 for p50, 0.99 for p99) of a non-empty sequence."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def microseconds(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs"


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"
