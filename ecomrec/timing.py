"""Wall-clock timing of fit stages and calls (the numbers reports and ``fit_stages_`` carry)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class Stopwatch:
    """``with Stopwatch() as w: ...``; then ``w.seconds``."""

    def __enter__(self) -> Stopwatch:
        self._start, self.seconds = time.perf_counter(), 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


@contextlib.contextmanager
def timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Add the block's wall-clock seconds to ``seconds[stage]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start
