"""Is the daemon alive, is it ready, how is it doing: the checks behind /livez, /readyz, /health.

- **Alive** (``/livez``, systemd's ``WATCHDOG=1``): the file watcher's threads run, the main loop
  ticks, every worker thread lives and the workers make progress: idle workers refresh
  ``pool.last_progress`` every 0.2 s, and no file stays in work longer than ``stall_after``.
  Restarting fixes a daemon that is not alive; it would not bring a remote back, so a remote that
  is down never fails liveness.
- **Ready** (``/readyz``): the start-up scan is done, the daemon is not stopping, every folder
  it writes to takes a real write (a probe file created and removed: permissions alone do not stop
  root) and the disk is above the critical threshold.
- **/health**: the document ``{status, timestamp, uptime, checks: {application, dependencies,
  storage, resources}}``; each check has its own ``status`` and the worst one wins. A remote that
  is down, a breaker that is open, the fallback in use or a folder of the inbox whose photos wait
  (one the daemon cannot write, a filesystem mounted inside it) make it *degraded*; a daemon that
  is not alive or cannot write makes it *unhealthy* (HTTP 503).

The remover may offer ``state()``, a dict read here with these keys (all optional):
``reachable`` / ``remote_reachable`` (bool), ``breaker`` / ``breaker_state`` (``closed``, ``open``,
``half-open``), ``last_error`` (str), ``fallback_in_use`` / ``fallback_active`` (bool),
``local_model_loaded`` (bool), ``local_runtime`` (``{runtime, precision, why}``), ``waiting``
(bool: no fallback, files wait). A ``LocalRemover`` answers through its ``loaded`` and ``choice``
properties.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from loguru import logger

from watcher import __version__
from watcher.config import Settings
from watcher.faults import probe_write
from watcher.logging import Redactor
from watcher.metrics import Metrics

if TYPE_CHECKING:  # the app is passed in; importing it at run time would invert the layers
    from watcher.app import App

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
_RANK = {HEALTHY: 0, DEGRADED: 1, UNHEALTHY: 2}
MIB = 1024**2
# Liveness never fails faster than this, whatever the remote timeout.
MIN_STALL_SECONDS = 60.0


def _runtime_doc(s: Settings, remover: object, state: Mapping[str, Any]) -> dict[str, Any]:
    """LOCAL_RUNTIME and, once the model has loaded, the runtime and precision that run it."""
    choice = _first(state, "local_runtime")
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


def _first(state: Mapping[str, Any], *keys: str) -> Any:
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


class Health:
    """The checks over one running ``App``; safe to call from any thread, read-only on the app."""

    def __init__(self, app: App, *, stall_after: float | None = None,
                 disk: DiskThresholds | None = None, secrets: Iterable[str] = ()) -> None:
        s = app.settings
        self.app = app
        self.stall_after = stall_after if stall_after is not None else stall_seconds(s)
        self.disk = disk or DiskThresholds()
        # the settings' own secrets (token, a URL's password or token) and any given
        self.redact = Redactor([*s.secret_values(), *secrets])
        self.last_tick = time.monotonic()
        self._workers: int | None = None
        self._process = psutil.Process()
        self._process_lock = threading.Lock()

    # -- wiring ------------------------------------------------------------------------------------

    def attach(self) -> None:
        """Hook into the app's main loop and export the scrape-time gauges."""
        self.app.on_tick.append(self._tick)
        self.app.on_ready.append(self._ready)
        self.export(self.app.metrics)

    def _tick(self, app: App) -> None:
        self.last_tick = time.monotonic()

    def _ready(self, app: App) -> None:
        self._workers = app.pool.alive()

    def folders(self) -> dict[str, Path]:
        """Folders the daemon must be able to write, by their user-facing role."""
        s = self.app.settings
        return {"inbox": s.upload_path, "output": s.output_path, "processed": s.processed_path,
                "failed": s.failed_path, "state": s.state_path}

    def export(self, metrics: Metrics) -> None:
        """Gauges read when Prometheus scrapes: nothing is computed between scrapes."""
        s = self.app.settings
        for role, path in (("inbox", s.upload_path), ("output", s.output_path),
                           ("backups", s.backup_path), ("logs", s.log_path)):
            metrics.storage_free.labels(role).set_function(_disk_value(path, "free"))
            metrics.storage_size.labels(role).set_function(_disk_value(path, "total"))
        metrics.dependency_up.labels("local_model").set_function(
            lambda: float(s.model_path.is_file()))
        if s.removal_kind == "gradio":
            remover = self.app.remover

            def remote_up() -> float:
                reachable = _first(remover_state(remover), "reachable", "remote_reachable")
                return math.nan if reachable is None else float(bool(reachable))

            def breaker_open() -> float:
                breaker = _first(remover_state(remover), "breaker", "breaker_state")
                return math.nan if breaker is None else float(breaker == "open")

            metrics.dependency_up.labels("remote").set_function(remote_up)
            metrics.breaker_open.labels(remover.name).set_function(breaker_open)

    # -- liveness and readiness --------------------------------------------------------------------

    def pulse(self) -> Pulse:
        app, pool, now = self.app, self.app.pool, time.monotonic()
        jobs = list(pool.in_flight.values())
        oldest = min(jobs, key=lambda job: job.started) if jobs else None
        return Pulse(
            watcher_alive=watcher_alive(app.watch),
            loop_idle=now - self.last_tick,
            workers_alive=pool.alive(),
            workers_expected=self._workers or 0,
            idle_for=now - pool.last_progress,
            oldest=(str(oldest.rel), now - oldest.started) if oldest else None,
        )

    def live(self) -> Verdict:
        app = self.app
        if not app.ready.is_set():
            return Verdict(True, ["starting"])  # start-up has its own timeout (systemd, k8s)
        if app.flags.stop.is_set():
            return Verdict(True, ["stopping"])  # workers wind down; SHUTDOWN_TIMEOUT bounds it
        p, limit = self.pulse(), self.stall_after
        problems = []
        if not p.watcher_alive:
            problems.append("the file watcher stopped (was the inbox folder removed or "
                            "replaced?)")
        if p.loop_idle > limit:
            problems.append(f"the main loop has not run for {p.loop_idle:.0f} s")
        if p.workers_alive < p.workers_expected:
            problems.append(f"{p.workers_expected - p.workers_alive} of {p.workers_expected} "
                            "worker threads died")
        if p.idle_for > limit:
            problems.append(f"no worker has made progress for {p.idle_for:.0f} s")
        if p.oldest and p.oldest[1] > limit:
            problems.append(f"{p.oldest[0]} has been in work for {p.oldest[1]:.0f} s "
                            f"(limit {limit:.0f} s)")
        return Verdict(not problems, problems)

    def ready(self) -> Verdict:
        app = self.app
        problems = []
        if app.flags.stop.is_set():
            problems.append("stopping")
        elif not app.ready.is_set():
            problems.append("the start-up scan is not done yet")
        faults = app.pipeline.faults.active()
        problems.extend(fault.describe() for fault in faults)
        reported = {fault.key for fault in faults}
        storage = self.storage()
        for role, folder in storage["folders"].items():
            if folder["problem"] and f"folder:{folder['path']}" not in reported:
                problems.append(f"{role} folder {folder['path']}: {folder['problem']}")
        for disk in storage["disks"]:
            if disk["status"] == UNHEALTHY:
                problems.append(f"disk of {disk['path']} almost full: "
                                f"{disk['free_bytes'] // MIB} MiB free")
        return Verdict(not problems, problems)

    # -- the /health document ----------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        checks = {
            "application": self.application(),
            "dependencies": self.dependencies(),
            "storage": self.storage(),
            "resources": self.resources(),
        }
        return {
            "status": worst(check["status"] for check in checks.values()),
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "uptime": round(time.time() - self.app.started, 1),
            "version": __version__,
            "worker_id": self.app.settings.worker_id,
            "checks": checks,
        }

    def application(self) -> dict[str, Any]:
        app, pool = self.app, self.app.pool
        verdict, p = self.live(), self.pulse()
        faults, held = app.pipeline.faults.active(), app.pipeline.faults.held()
        if not verdict.ok or faults:
            status = UNHEALTHY
        elif held or not app.ready.is_set() or app.flags.stop.is_set():
            status = DEGRADED
        else:
            status = HEALTHY
        progressing = p.idle_for <= self.stall_after and (
            p.oldest is None or p.oldest[1] <= self.stall_after)
        return {
            "status": status,
            "problems": ([] if verdict.ok else verdict.problems)
                        + [fault.describe() for fault in faults + held],
            # what stops every photo alike; they wait in the inbox until it is fixed
            "faults": [{"cause": fault.key, "problem": fault.problem, "fix": fault.fix,
                        "since": datetime.fromtimestamp(fault.since, timezone.utc)
                        .isoformat(timespec="seconds")} for fault in faults],
            # folders of the inbox whose photos wait (the others go on): a shop folder the
            # daemon cannot write, a filesystem mounted inside the inbox
            "held_folders": [{"folder": str(fault.folder), "problem": fault.problem,
                              "fix": fault.fix, "since": datetime.fromtimestamp(
                                  fault.since, timezone.utc).isoformat(timespec="seconds")}
                             for fault in held],
            "ready": app.ready.is_set() and not faults,
            "stopping": app.flags.stop.is_set(),
            "watcher_alive": p.watcher_alive,
            "watch_mode": app.watch.active_mode,
            "workers_alive": p.workers_alive,
            "workers_progressing": progressing,
            "seconds_since_progress": round(p.idle_for, 1),
            "stall_after_seconds": self.stall_after,
            "oldest_in_flight_seconds": round(p.oldest[1], 1) if p.oldest else None,
            "queue_depth": app.queue_depth(),
            "in_flight": len(pool.in_flight),
            "files_finished": pool.done_count,
            "outcomes": {getattr(k, "value", str(k)): v for k, v in dict(pool.counts).items()},
            "last_file_done": pool.last_done,
        }

    def dependencies(self) -> dict[str, Any]:
        s, remover = self.app.settings, self.app.remover
        state = remover_state(remover)
        remote = s.removal_kind == "gradio"
        loaded = _first(state, "local_model_loaded")
        if loaded is None:
            loaded = getattr(remover, "loaded", None)
        model_present = s.model_path.is_file()
        doc: dict[str, Any] = {
            "removal_backend": getattr(remover, "name", s.removal_kind),
            "local_model": {"path": str(s.model_path), "present": model_present,
                            "loaded": loaded, **_runtime_doc(s, remover, state)},
        }
        problems = []
        needs_local = not remote or s.gradio_fallback_enabled
        if needs_local and not model_present:
            problems.append("the local model is missing: run `thumbgen models fetch`")
        if remote:
            reachable = _first(state, "reachable", "remote_reachable")
            breaker = _first(state, "breaker", "breaker_state")
            fallback = _first(state, "fallback_in_use", "fallback_active")
            doc["remote"] = {
                "url": self.redact.text(s.gradio_api_url),
                "reachable": reachable,
                "breaker": breaker,
                "fallback_in_use": fallback,
                "last_error": self.redact.value(_first(state, "last_error")),
                "state": self.redact.value(state),
            }
            if reachable is False:
                problems.append("the remote background remover is unreachable")
            if breaker not in (None, "closed"):
                problems.append(f"the remote's circuit breaker is {breaker}")
            if fallback:
                problems.append("the local model stands in for the remote")
            if _first(state, "waiting"):
                problems.append("files wait in the inbox for the remote to come back")
        # Only a local backend without its model leaves no way to make cut-outs.
        broken = not remote and not model_present
        doc["status"] = UNHEALTHY if broken else (DEGRADED if problems else HEALTHY)
        doc["problems"] = problems
        return doc

    def storage(self) -> dict[str, Any]:
        folders: dict[str, dict[str, Any]] = {}
        for role, path in self.folders().items():
            problem = probe_write(path)
            folders[role] = {"path": str(path), "present": path.is_dir(),
                             "writable": problem is None, "problem": problem}
        disks, seen = [], set()
        for path in self.folders().values():
            try:
                device = path.stat().st_dev
                usage = shutil.disk_usage(path)
            except OSError:
                continue
            if device in seen:
                continue
            seen.add(device)
            disks.append({
                "path": str(path), "free_bytes": usage.free, "total_bytes": usage.total,
                "free_ratio": round(usage.free / usage.total, 4) if usage.total else None,
                "warning_below_bytes": self.disk.warning_bytes,
                "warning_below_ratio": self.disk.warning_ratio,
                "critical_below_bytes": self.disk.critical_bytes,
                "status": self.disk.status(usage.free, usage.total),
            })
        unusable = any(f["problem"] for f in folders.values())
        status = worst([UNHEALTHY if unusable else HEALTHY] + [d["status"] for d in disks])
        return {"status": status, "folders": folders, "disks": disks}

    def resources(self) -> dict[str, Any]:
        with self._process_lock:
            proc = self._process
            with proc.oneshot():
                cpu = proc.cpu_percent(None)  # since the previous /health call
                memory = proc.memory_info()
                threads = proc.num_threads()
                fds = proc.num_fds()
        system = psutil.virtual_memory()
        load1, load5, _ = os.getloadavg()
        status = DEGRADED if system.percent >= 95 else HEALTHY
        return {
            "status": status,
            "cpu_percent": cpu,
            "cpu_count": os.cpu_count(),
            "load_average": [round(load1, 2), round(load5, 2)],
            "memory_rss_bytes": memory.rss,
            "system_memory_percent": system.percent,
            "system_memory_available_bytes": system.available,
            "threads": threads,
            "open_files": fds,
        }


def _disk_value(path: Path, attr: str) -> Callable[[], float]:
    def read() -> float:
        # a folder not created yet (backups before the first one) will live on its parent's disk
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        try:
            return float(getattr(shutil.disk_usage(existing or path), attr))
        except OSError:
            return math.nan
    return read


__all__ = ["Health", "Verdict", "DiskThresholds", "HEALTHY", "DEGRADED", "UNHEALTHY", "worst",
           "probe_write", "watcher_alive", "stall_seconds"]
