"""``Health``: the checks over one running ``App`` (liveness, readiness, the /health document
and the gauges), built from ``verdicts``."""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from watcher import __version__
from watcher.faults import probe_write
from watcher.health.verdicts import (DEGRADED, HEALTHY, MIB, UNHEALTHY, DiskThresholds, Pulse,
                                     Verdict, disk_value, first_of, remover_state, runtime_doc,
                                     stall_seconds, watcher_alive, worst)
from watcher.logging import Redactor
from watcher.metrics import Metrics

if TYPE_CHECKING:  # the app is passed in; importing it at run time would invert the layers
    from watcher.app import App


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
            metrics.storage_free.labels(role).set_function(disk_value(path, "free"))
            metrics.storage_size.labels(role).set_function(disk_value(path, "total"))
        metrics.dependency_up.labels("local_model").set_function(
            lambda: float(s.model_path.is_file()))
        if s.removal_kind == "gradio":
            remover = self.app.remover

            def remote_up() -> float:
                reachable = first_of(remover_state(remover), "reachable", "remote_reachable")
                return math.nan if reachable is None else float(bool(reachable))

            def breaker_open() -> float:
                breaker = first_of(remover_state(remover), "breaker", "breaker_state")
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
        loaded = first_of(state, "local_model_loaded")
        if loaded is None:
            loaded = getattr(remover, "loaded", None)
        model_present = s.model_path.is_file()
        doc: dict[str, Any] = {
            "removal_backend": getattr(remover, "name", s.removal_kind),
            "local_model": {"path": str(s.model_path), "present": model_present,
                            "loaded": loaded, **runtime_doc(s, remover, state)},
        }
        problems = []
        needs_local = not remote or s.gradio_fallback_enabled
        if needs_local and not model_present:
            problems.append("the local model is missing: run `thumbgen models fetch`")
        if remote:
            reachable = first_of(state, "reachable", "remote_reachable")
            breaker = first_of(state, "breaker", "breaker_state")
            fallback = first_of(state, "fallback_in_use", "fallback_active")
            doc["remote"] = {
                "url": self.redact.text(s.gradio_api_url),
                "reachable": reachable,
                "breaker": breaker,
                "fallback_in_use": fallback,
                "last_error": self.redact.value(first_of(state, "last_error")),
                "state": self.redact.value(state),
            }
            if reachable is False:
                problems.append("the remote background remover is unreachable")
            if breaker not in (None, "closed"):
                problems.append(f"the remote's circuit breaker is {breaker}")
            if fallback:
                problems.append("the local model stands in for the remote")
            if first_of(state, "waiting"):
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
