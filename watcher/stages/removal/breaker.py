"""A circuit breaker: after repeated failures, stop calling for a cool-down, then probe once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import Enum


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Thread-safe breaker with one probe at a time.

    - closed: every call is allowed; ``threshold`` failures in a row open it.
    - open: no call is allowed until ``cooldown`` seconds have passed; then the next caller is
      let through alone as the probe (half-open).
    - half-open: the probe's success closes it; its failure opens it again with the cool-down
      doubled (up to ``max_cooldown``), so a long outage is not probed every few seconds.

    A caller that was allowed must report ``success()``, ``failure()`` or ``inconclusive()``
    exactly once per call.
    """

    def __init__(self, threshold: int = 5, cooldown: float = 10.0, max_cooldown: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if threshold < 1 or cooldown <= 0:
            raise ValueError("threshold must be >= 1 and cooldown > 0")
        self.threshold = threshold
        self.base_cooldown = cooldown
        self.max_cooldown = max(cooldown, max_cooldown)
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._cooldown = cooldown
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        with self._lock:
            if self._state is BreakerState.OPEN and self._cooled_down():
                return BreakerState.HALF_OPEN
            return self._state

    @property
    def failures(self) -> int:
        """Failures in a row since the last success."""
        return self._failures

    def retry_in(self) -> float:
        """Seconds until the next probe may go out (0 when calls are allowed)."""
        with self._lock:
            if self._state is not BreakerState.OPEN:
                return 0.0
            return max(0.0, self._opened_at + self._cooldown - self._clock())

    def allow(self) -> bool:
        """May a call go out now? In half-open, only the one probe may."""
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return True
            if self._state is BreakerState.OPEN and self._cooled_down():
                self._state = BreakerState.HALF_OPEN
            if self._state is BreakerState.HALF_OPEN and not self._probing:
                self._probing = True
                return True
            return False

    def success(self) -> None:
        with self._lock:
            self._state = BreakerState.CLOSED
            self._failures = 0
            self._cooldown = self.base_cooldown
            self._probing = False

    def inconclusive(self) -> None:
        """The call proved nothing either way (the service is up but busy): count nothing, and
        let the next caller probe if this one was the probe."""
        with self._lock:
            self._probing = False

    def failure(self) -> bool:
        """Count a failure; True when this one opened a closed breaker (a new outage)."""
        with self._lock:
            self._failures += 1
            if self._state is BreakerState.HALF_OPEN:
                if self._probing:  # the probe failed: wait longer before the next one
                    self._cooldown = min(self.max_cooldown, self._cooldown * 2)
                self._probing = False
                self._open()
            elif self._state is BreakerState.CLOSED and self._failures >= self.threshold:
                self._open()
                return True
            return False

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()

    def _cooled_down(self) -> bool:
        return self._clock() - self._opened_at >= self._cooldown
