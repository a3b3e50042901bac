"""A remote cut-out service made dependable: cache, bounded concurrency, rate limit, retries,
circuit breaker, and the local model as fallback — or, with the fallback off, files that wait.

The rule it keeps for the product: a photo is rejected only when the service answered, for this
very photo, on every attempt, that it cannot read it, and it served another photo since the first
refusal (one it served meanwhile, or a tiny control photo sent to find out).
Every other failure (down, slow, overloaded, broken) means "not now": the local model makes the
cut-out, or the file waits in the inbox (``RemovalUnavailable``) for the service to come back.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import ContextManager

from loguru import logger
from PIL import Image

from watcher import messages
from watcher.errors import ModelError, RejectedImage, RemovalUnavailable
from watcher.metrics import Metrics
from watcher.stages.removal.base import Remover
from watcher.stages.removal.breaker import CircuitBreaker
from watcher.stages.removal.cache import MaskCache, content_key
from watcher.stages.removal.pacing import Backoff, RateLimit
from watcher.stages.removal.remote import RefusedInput, RemoteBackend, RemoteError, TransientError

REFUSED_REASON = messages.text(messages.ENGLISH, "reason.refused_by_remote")
_NO_ANSWER = {"unreachable", "timeout", "interrupted"}  # kinds where nobody answered
# The service is up but busy: back off and retry, but this is no outage for the breaker.
_BUSY = {"queue_full", "rate_limited"}
_REFUSALS_KEPT = 1000
# Without a fallback, a call that finds the breaker open waits this long for the next probe
# (holding its file's claim) instead of sending the file straight back to the inbox, where it
# would be picked up, decoded and sent back again a moment later.
PAUSED_WAIT = 5.0
_PAUSED_POLL = 0.25


def _control_photo() -> Image.Image:
    """A photo any cut-out service can read: a grey box on white."""
    image = Image.new("RGB", (64, 48), (255, 255, 255))
    image.paste((90, 90, 90), (16, 12, 48, 36))
    return image


class _Stopping(Exception):
    """close() was called while a call waited for its turn."""


class RemoteRemover:
    """The ``Remover`` in front of a ``RemoteBackend``; ``cpu_bound`` is False.

    ``max_in_flight`` calls go out at once at most, whatever the number of threads calling
    ``mask()``. The local ``fallback`` (None: off) runs inside one of ``cpu_slots``, the
    pipeline's own CPU semaphore, so falling back never oversubscribes the cores.

    ``name`` is the remote's name; in the thread that just returned from ``mask()`` it is the
    name of what actually served the cut-out (``gradio``, ``gradio-cache`` or ``local``), which
    is what the pipeline records for the file.
    """

    cpu_bound = False

    def __init__(self, remote: RemoteBackend, metrics: Metrics, *, max_in_flight: int,
                 backoff: Backoff, breaker: CircuitBreaker, rate_limit: RateLimit | None = None,
                 cache: MaskCache | None = None, fallback: Remover | None = None,
                 cpu_slots: threading.Semaphore | None = None) -> None:
        self.remote = remote
        self.metrics = metrics
        self.backoff = backoff
        self.breaker = breaker
        self.rate_limit = rate_limit or RateLimit(0)
        self.cache = cache
        self.fallback = fallback
        self.max_in_flight = max_in_flight
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._cpu: ContextManager[object] = cpu_slots if cpu_slots is not None else nullcontext()
        self._stop = threading.Event()
        self._served_by = threading.local()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._reachable: bool | None = None
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._last_success_at: float | None = None
        self._last_success_mono = float("-inf")
        self._episode: dict[str, float] | None = None  # an outage: when it began, files served
        self._fallback_in_use = False
        self._refusals: OrderedDict[str, tuple[int, float]] = OrderedDict()

    @property
    def name(self) -> str:
        return getattr(self._served_by, "name", self.remote.name)

    # -- the Remover contract ------------------------------------------------------------------

    def mask(self, image: Image.Image) -> Image.Image:
        key = content_key(image, self.remote.name, self.remote.endpoint,
                          str(self.remote.max_side))
        if self.cache is not None:
            cached = self.cache.get(key, image.size)
            if cached is not None:
                self.metrics.cache_hits.inc()
                return self._served(cached, f"{self.remote.name}-cache")
            self.metrics.cache_misses.inc()
        try:
            mask = self._call(image)
        except (_Stopping, RemoteError) as exc:
            # close() cancels calls in flight: what they raise then says nothing about the photo
            if isinstance(exc, _Stopping) or self._stop.is_set():
                raise RemovalUnavailable("the daemon is stopping; the file waits") from None
            if isinstance(exc, RefusedInput):
                return self._refused(image, key, exc)
            return self._fallback_or_wait(image, exc)
        with self._lock:
            self._refusals.pop(key, None)
        if self.cache is not None:
            self.cache.put(key, mask)
        return self._served(mask, self.remote.name)

    def close(self) -> None:
        """Wake every waiting call (they end as ``RemovalUnavailable``) and free the clients."""
        self._stop.set()
        self.remote.close()
        if self.fallback is not None:
            self.fallback.close()

    def state(self) -> dict[str, object]:
        """What ``/health`` needs to know about the remote, as a flat JSON-ready dict:

        - ``backend`` (str), ``endpoint`` (str): who answers;
        - ``reachable``: True when the last attempt got an answer, False when it got none
          (down, timeout, dropped), None before the first attempt;
        - ``breaker``: ``"closed"`` | ``"open"`` | ``"half-open"``; ``consecutive_failures``
          (int); ``retry_in`` (seconds until the breaker lets a probe out; 0 when closed);
        - ``last_error`` (str | None) and ``last_error_at``, ``last_success_at`` (Unix time or
          None);
        - ``fallback_enabled`` (bool); ``fallback_in_use`` (bool: the local model is serving
          while the remote fails); ``local_model_loaded`` (bool); ``local_runtime``
          (``{runtime, precision, why}`` once the fallback's model has loaded, else None);
        - ``waiting`` (bool: the remote fails, there is no fallback, files wait in the inbox);
        - ``in_flight``, ``max_in_flight`` (int): remote calls now, and the bound.

        Healthy: breaker closed and no fallback in use. Degraded: otherwise (thumbnails still
        come, from the local model or after a wait).
        """
        with self._lock:
            outage = self._episode is not None
            return {
                "backend": self.remote.name,
                "endpoint": self.remote.endpoint,
                "reachable": self._reachable,
                "breaker": self.breaker.state.value,
                "consecutive_failures": self.breaker.failures,
                "retry_in": round(self.breaker.retry_in(), 1),
                "last_error": self._last_error,
                "last_error_at": self._last_error_at,
                "last_success_at": self._last_success_at,
                "fallback_enabled": self.fallback is not None,
                "fallback_in_use": outage and self._fallback_in_use,
                "local_model_loaded": bool(getattr(self.fallback, "loaded", False)),
                "local_runtime": _choice_of(self.fallback),
                "waiting": outage and self.fallback is None,
                "in_flight": self._in_flight,
                "max_in_flight": self.max_in_flight,
            }

    # -- the remote call, with retries ---------------------------------------------------------

    def _call(self, image: Image.Image) -> Image.Image:
        """Up to ``backoff.attempts`` attempts; raises the last RemoteError."""
        last: RemoteError | None = None
        patience = time.monotonic() + (PAUSED_WAIT if self.fallback is None else 0.0)
        for attempt in range(1, self.backoff.attempts + 1):
            if attempt > 1 and self._stop.wait(self.backoff.delay(attempt - 1)):
                raise _Stopping
            try:
                return self._attempt_when_allowed(image, patience)
            except TransientError as exc:
                last = exc
                if exc.kind == "breaker_open":
                    break
        assert last is not None
        raise last

    def _attempt_when_allowed(self, image: Image.Image, patience: float) -> Image.Image:
        """One attempt; while the breaker holds calls back, wait for it until ``patience``."""
        while True:
            try:
                return self._attempt(image)
            except TransientError as exc:
                if exc.kind != "breaker_open" or time.monotonic() >= patience:
                    raise
            if self._stop.wait(_PAUSED_POLL):
                raise _Stopping

    def _attempt(self, image: Image.Image) -> Image.Image:
        with self._slots:
            # asked here, not before waiting for a slot: the breaker may have opened meanwhile
            if not self.breaker.allow():
                raise TransientError("breaker_open", self._breaker_message())
            try:
                if not self.rate_limit.acquire(self._stop):
                    raise _Stopping
                with self._counted():
                    mask = self.remote.cutout(image)
            except RemoteError as exc:
                self._failed(exc)
                raise
            except _Stopping:
                self.breaker.inconclusive()
                raise
            except BaseException:
                self.breaker.failure()  # a bug must not leave the probe taken
                raise
            self._succeeded()
            return mask

    @contextmanager
    def _counted(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def _succeeded(self) -> None:
        self.breaker.success()
        self.metrics.removal_requests.labels(self.remote.name, "ok").inc()
        with self._lock:
            self._reachable = True
            self._last_success_at = time.time()
            self._last_success_mono = time.monotonic()
            episode, self._episode = self._episode, None
            self._fallback_in_use = False
        if episode is not None:
            how = ("cut-out(s) were made locally" if self.fallback is not None else
                   "time(s) a file was sent back to wait")
            logger.bind(stage="remove").info(
                "remote background removal ({}) is back after {:.0f} s; meanwhile {:.0f} {}",
                self.remote.endpoint, time.monotonic() - episode["since"], episode["files"], how)

    def _failed(self, exc: RemoteError) -> None:
        if exc.kind in _BUSY:
            self.breaker.inconclusive()
            opened = False
        else:
            opened = self.breaker.failure()
        self.metrics.removal_requests.labels(self.remote.name, exc.kind).inc()
        with self._lock:
            self._reachable = exc.kind not in _NO_ANSWER
            self._last_error = f"{exc.kind}: {exc}"
            self._last_error_at = time.time()
        log = logger.bind(stage="remove", outcome=exc.kind)
        if opened:  # once per outage; failed probes after it are only debug lines
            log.warning("remote background removal failed {} time(s) in a row ({}); pausing "
                        "calls for {:.0f} s", self.breaker.failures, exc, self.breaker.retry_in())
        else:
            log.debug("remote attempt failed ({} in a row): {}", self.breaker.failures, exc)

    def _breaker_message(self) -> str:
        return (f"{self.breaker.failures} failures in a row; next try in "
                f"{self.breaker.retry_in():.0f} s (last: {self._last_error})")

    # -- when the remote cannot serve ----------------------------------------------------------

    def _fallback_or_wait(self, image: Image.Image, exc: RemoteError) -> Image.Image:
        first = self._start_or_count_episode()
        log = logger.bind(stage="remove")
        why = f"{exc.kind}: {exc}"
        if self.fallback is None:
            if first:
                log.warning("remote background removal is unavailable ({}); files wait in the "
                            "inbox until it is back (GRADIO_FALLBACK_ENABLED is off)", why)
            raise RemovalUnavailable(f"remote background removal is unavailable ({why})")
        if first:
            log.warning("remote background removal is unavailable ({}); the local model makes "
                        "the cut-outs until it is back", why)
        with self._lock:
            self._fallback_in_use = True
        return self._local(image)

    def _start_or_count_episode(self) -> bool:
        """Count one more file served during the outage; True for the outage's first file."""
        with self._lock:
            if self._episode is None:
                self._episode = {"since": time.monotonic(), "files": 1}
                return True
            self._episode["files"] += 1
            return False

    def _local(self, image: Image.Image) -> Image.Image:
        assert self.fallback is not None
        try:
            with self._cpu:
                mask = self.fallback.mask(image)
        except ModelError as exc:
            self.metrics.removal_requests.labels(self.fallback.name, "error").inc()
            raise RemovalUnavailable(f"the remote failed and the local model cannot run: "
                                     f"{exc}") from exc
        self.metrics.removal_requests.labels(self.fallback.name, "fallback").inc()
        return self._served(mask, self.fallback.name)

    def _refused(self, image: Image.Image, key: str, exc: RefusedInput) -> Image.Image:
        """The service answered that it cannot read this photo."""
        log = logger.bind(stage="remove", outcome="refused")
        if self.fallback is not None:
            log.warning("the remote refused this photo ({}); the local model makes its "
                        "cut-out", exc)
            return self._local(image)
        with self._lock:
            count, since = self._refusals.pop(key, (0, time.monotonic()))
            count += 1
            self._refusals[key] = (count, since)
            while len(self._refusals) > _REFUSALS_KEPT:
                self._refusals.popitem(last=False)
            served_since = self._last_success_mono > since
        # only a service that works for other photos proves that this photo is the problem
        proven = count >= self.backoff.attempts and (served_since or self._serves_control())
        if proven:
            with self._lock:
                self._refusals.pop(key, None)
            raise RejectedImage.because("refused_by_remote", f"{self.remote.endpoint} refused "
                                        f"it {count} times: {exc}", stage="remove",
                                        kind="refused_by_remote")
        log.warning("the remote refused this photo ({}); refusal {} of {}, the file waits and "
                    "is tried again", exc, count, self.backoff.attempts)
        raise RemovalUnavailable(f"the remote refused this photo ({exc}); it is tried again later")

    def _serves_control(self) -> bool:
        """Does the service cut out a photo it can certainly read? (One call, never cached.)"""
        try:
            self._attempt(_control_photo())
        except (RemoteError, _Stopping):
            return False
        return True

    def _served(self, mask: Image.Image, by: str) -> Image.Image:
        self._served_by.name = by
        return mask


def _choice_of(remover: object) -> dict[str, str] | None:
    """The runtime and precision of a loaded local remover, JSON-ready; None before it loads."""
    choice = getattr(remover, "choice", None)
    return choice.as_dict() if choice is not None else None
