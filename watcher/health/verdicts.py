"""What the health checks are made of: the three statuses and the worst of them, liveness's
stall time, the disk thresholds, a verdict, the pulse liveness reads, and the probes of the
watcher, the remover's state and the disks."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from watcher.config import Settings


HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
_RANK = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}
MIB = 1024**2
# Liveness never fails faster than this, whatever the remote timeout.
MIN_STALL_SECONDS = 60.0


def runtime_doc(s: Settings, remover: object, state: Mapping[str, Any]) -> dict[str, Any]:
    """LOCAL_RUNTIME and, once the model has loaded, the runtime and precision that run it."""
    choice = first_of(state, "local_runtime")
    if choice is None and getattr(remover, "choice", None) is not None:
        choice = remover.choice.as_dict()  # type: ignore[attr-defined]
    choice = choice or {}
    return {"runtime_setting": s.local_runtime, "runtime": choice.get("runtime"),
            "precision": choice.get("precision"), "runtime_why": choice.get("why")}


def worst(statuses: Iterable[str]) -> str:
    return max(statuses, key=_RANK.__getitem__, default=HEALTHY)


def stall_seconds(s: Settings) -> float:
    """How long a file may legitimately stay in work before the pipeline counts as stuck.

    A local cut-out takes about a second, so the floor rules. A remote file may, on every
    attempt, wait for a free call slot behind calls that run to their full timeout, wait for
    the rate limit's window, run to its own timeout, and back off (at most 8 s) before the next.
    """
    if s.removal_kind != "gradio":
        return MIN_STALL_SECONDS
    slot_wait = math.ceil(s.cpu_workers / s.max_concurrent_requests) * s.gradio_timeout
    callers = s.cpu_workers + s.max_concurrent_requests
    rate_wait = (60.0 * math.ceil(callers / s.rate_limit_per_minute)
                 if s.rate_limit_per_minute else 0.0)
    per_attempt = slot_wait + rate_wait + s.gradio_timeout + 8.0
    return max(MIN_STALL_SECONDS, s.gradio_retry_attempts * per_attempt + 30.0)


@dataclass(frozen=True)
class DiskThresholds:
    """Free space below ``critical_bytes`` stops readiness; below the warning levels, degraded."""

    critical_bytes: int = 256 * MIB
    warning_bytes: int = 1024 * MIB
    warning_ratio: float = 0.05

    def status(self, free: int, total: int) -> str:
        if free < self.critical_bytes:
            return UNHEALTHY
        if free < self.warning_bytes or (total and free / total < self.warning_ratio):
            return DEGRADED
        return HEALTHY


@dataclass
class Verdict:
    ok: bool
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Pulse:
    """What liveness is judged on; durations in seconds."""

    watcher_alive: bool
    loop_idle: float
    workers_alive: int
    workers_expected: int
    idle_for: float
    oldest: tuple[str, float] | None  # the file longest in work, and for how long


def watcher_alive(watch: Any) -> bool:
    """The observer thread runs *and* so do its emitters.

    When the inbox folder is removed, watchdog's inotify emitter thread ends while the observer
    thread goes on dispatching nothing: ``observer.is_alive()`` alone would call that alive.
    """
    if not watch.alive():
        return False
    emitters = getattr(watch.observer, "emitters", None) or ()
    return all(emitter.is_alive() for emitter in emitters)


def first_of(state: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in state:
            value = state[key]
            return getattr(value, "value", value)  # str enums (BreakerState) as plain text
    return None


def remover_state(remover: Any) -> dict[str, Any]:
    """``remover.state()`` as plain data, or ``{}`` when the remover has none.

    A boundary to another component's code: if its ``state()`` raises, /health and /metrics must
    still answer, so the error becomes part of the state.
    """
    state_fn = getattr(remover, "state", None)
    if not callable(state_fn):
        return {}
    try:
        state = dict(state_fn())
    except Exception as exc:
        logger.opt(exception=True).debug("remover.state() failed")
        return {"state_error": f"{type(exc).__name__}: {exc}"}
    return {k: getattr(v, "value", v) for k, v in state.items()}


def disk_value(path: Path, attr: str) -> Callable[[], float]:
    def read() -> float:
        # a folder not created yet (backups before the first one) will live on its parent's disk
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        try:
            return float(getattr(shutil.disk_usage(existing or path), attr))
        except OSError:
            return math.nan
    return read
