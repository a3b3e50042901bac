"""How often remote calls may go out: back-off between retries and a per-minute rate limit.

Both wait on a ``threading.Event`` rather than sleeping, so ``close()`` at shutdown wakes every
waiting thread at once instead of leaving it asleep for seconds.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off with jitter: the n-th retry waits ``base·2ⁿ`` capped at ``cap``,
    times a random factor in [0.5, 1) so that callers that failed together do not retry
    together."""

    attempts: int = 3
    base: float = 0.5
    cap: float = 8.0

    def delay(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        ceiling = min(self.cap, self.base * 2 ** (retry - 1))
        return ceiling * (0.5 + rng() / 2)


class RateLimit:
    """At most ``per_minute`` calls start in any 60-second window (0 = no limit).

    A sliding log of start times: exact, and small because it never holds more than
    ``per_minute`` entries.
    """

    WINDOW = 60.0

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self, stop: threading.Event) -> bool:
        """Wait for a free place in the window; False if ``stop`` was set while waiting."""
        if self.per_minute <= 0:
            return True
        while not stop.is_set():
            with self._lock:
                now = self._clock()
                while self._starts and now - self._starts[0] >= self.WINDOW:
                    self._starts.popleft()
                if len(self._starts) < self.per_minute:
                    self._starts.append(now)
                    return True
                wait = self._starts[0] + self.WINDOW - now
            stop.wait(min(wait, 1.0))
        return False
