"""Wall-clock latency of repeated calls: warm-up, then p50/p95/p99."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Milliseconds per call over ``n`` timed calls."""

    p50: float
    p95: float
    p99: float
    mean: float
    n: int

    @classmethod
    def from_seconds(cls, seconds: Sequence[float]) -> LatencyStats:
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        if not len(ms):
            raise ValueError("no timings")
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        return cls(float(p50), float(p95), float(p99), float(ms.mean()), len(ms))

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def time_calls(fn: Callable[[T], object], inputs: Sequence[T], *, warmup: int = 10) -> LatencyStats:
    """Call ``fn`` on the first ``warmup`` inputs untimed, then time one call per input."""
    for value in list(inputs)[:warmup]:
        fn(value)
    seconds = []
    for value in inputs:
        start = time.perf_counter()
        fn(value)
        seconds.append(time.perf_counter() - start)
    return LatencyStats.from_seconds(seconds)
