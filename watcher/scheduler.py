"""Scheduled backups and clean-up, on APScheduler's ``BackgroundScheduler``.

Both jobs run in one dedicated worker thread: they never overlap each other, never run twice at
once (``max_instances=1``), missed runs are merged into one (``coalesce``) and still run if the
daemon was busy or suspended for less than ``MISFIRE_GRACE_SECONDS``. A job that raises is logged
and counted; it never reaches the daemon. The job thread runs at a lower CPU priority (Linux keeps
a nice value per thread) so compressing archives yields to the pipeline's workers.

Schedules are cron expressions: five fields with the usual crontab meaning (weekday 0 or 7 is
Sunday, unlike APScheduler 3's own numbering), or six with seconds first
(``*/5 * * * * *``: every five seconds).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from apscheduler.events import (EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED,
                                JobEvent)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from loguru import logger

from watcher import backup, cleanup
from watcher.config import Settings
from watcher.errors import ConfigError
from watcher.metrics import Metrics

MISFIRE_GRACE_SECONDS = 3600
NICE_INCREMENT = 10
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")

Job = Callable[[threading.Event], object]


class _Lifecycle(Protocol):
    on_ready: list[Callable[[Any], None]]
    on_stopping: list[Callable[[Any], None]]


def _weekday(token: str) -> int:
    token = token.lower()
    if token in _WEEKDAYS:
        return _WEEKDAYS.index(token)
    if token.isdigit() and 0 <= int(token) <= 7:
        return int(token) % 7
    raise ValueError(f"unknown weekday {token!r}")


def crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field (0/7 = Sunday) as APScheduler 3 weekday names.

    APScheduler 3 numbers Monday 0, so ``0 3 * * 0`` given to it unchanged would run on Mondays;
    steps differ too. Expanding to names keeps the crontab meaning.
    """
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for item in field.split(","):
        base, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError("a step must be at least 1")
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            low, high = base.split("-", 1)
            first, last = _weekday(low), _weekday(high)
            if high.strip() == "7":
                last = 7  # 5-7: Friday to Sunday
        else:
            first = last = _weekday(base)
            if step_text:
                last = 6
        if last < first:
            raise ValueError(f"range {base!r} runs backwards")
        days |= {day % 7 for day in range(first, last + 1, step)}
    return ",".join(_WEEKDAYS[day] for day in sorted(days))


def build_trigger(key: str, expression: str, timezone: Any = None) -> CronTrigger:
    """A CronTrigger for a five-field (crontab) or six-field (seconds first) expression.

    Raises ConfigError naming ``key`` when APScheduler cannot use the expression.
    """
    fields = expression.split()
    try:
        if len(fields) == 5:
            second, (minute, hour, day, month, dow) = "0", fields
        elif len(fields) == 6:
            second, minute, hour, day, month, dow = fields
        else:
            raise ValueError("expected five fields, or six with seconds first")
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                           day_of_week=crontab_weekdays(dow), timezone=timezone)
    except ValueError as exc:
        raise ConfigError(key, expression, str(exc)) from None


def lower_thread_priority(increment: int = NICE_INCREMENT) -> bool:
    """Raise the nice value of the calling thread only; False where that is not possible.

    On Linux ``setpriority(PRIO_PROCESS, tid)`` applies to one thread. Elsewhere a thread id
    is not a process id, so nothing is done rather than renicing a stranger.
    """
    if not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid)
                                                 + increment))
    except OSError:
        return False
    return True


class Scheduler:
    """The daemon's scheduled jobs. ``attach(app)`` ties it to the App's lifecycle hooks."""

    def __init__(self, settings: Settings, metrics: Metrics,
                 jobs: Mapping[str, Job] | None = None,
                 schedules: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.cancel = threading.Event()
        self.jobs: dict[str, Job] = dict(jobs) if jobs is not None else {
            "backup": self._backup, "cleanup": self._cleanup}
        schedules = schedules or {"backup": settings.backup_schedule,
                                  "cleanup": settings.cleanup_schedule}
        self.triggers = {name: build_trigger(f"{name.upper()}_SCHEDULE", schedules[name])
                         for name in self.jobs}
        self._local = threading.local()
        self._aps = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": MISFIRE_GRACE_SECONDS})
        self._aps.add_listener(self._on_event,
                               EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR)

    # -- lifecycle -----------------------------------------------------------------------------

    def attach(self, app: _Lifecycle) -> None:
        app.on_ready.append(lambda _app: self.start())
        app.on_stopping.append(lambda _app: self.stop())

    def start(self) -> None:
        self._restore_gauges()
        for name, trigger in self.triggers.items():
            self._aps.add_job(self._run, trigger, args=(name,), id=name, name=name,
                              replace_existing=True)
        self._aps.start()
        for job in self._aps.get_jobs():
            logger.info("scheduled {}: next run at {}", job.id, job.next_run_time)

    def _restore_gauges(self) -> None:
        """After a restart, report the newest complete set on disk, not "never backed up"."""
        report_backups_on_disk(self.settings, self.metrics)

    def stop(self) -> None:
        """Abandon a running job at its next checkpoint and wait for the job thread to end."""
        if not self._aps.running:
            return
        self.cancel.set()
        self._aps.shutdown(wait=True)

    @property
    def running(self) -> bool:
        return bool(self._aps.running)

    # -- jobs ----------------------------------------------------------------------------------

    def _run(self, name: str) -> None:
        if not getattr(self._local, "reniced", False):
            self._local.reniced = lower_thread_priority()
        outcome = "done"
        try:
            self.jobs[name](self.cancel)
        except backup.BackupCancelled:
            outcome = "cancelled"
            logger.info("scheduled {} abandoned: the daemon is stopping", name)
        except backup.BackupBusy as exc:
            outcome = "skipped"
            logger.warning("scheduled {} skipped: {}", name, exc)
        except Exception:  # a failed job is logged and counted; the daemon goes on
            outcome = "failed"
            logger.exception("scheduled {} failed", name)
        self.metrics.scheduled_jobs.labels(name, outcome).inc()

    def _backup(self, cancel: threading.Event) -> None:
        try:
            report = backup.run_backup(self.settings, self.metrics, cancel=cancel)
        except backup.BackupBusy:
            self.metrics.backups.labels("skipped").inc()
            raise
        except backup.BackupCancelled:
            self.metrics.backups.labels("cancelled").inc()
            raise
        except Exception:
            self.metrics.backups.labels("failed").inc()
            raise
        if report.failed:  # counted by run_backup; the job failed all the same
            raise RuntimeError(f"backup {report.set_id} is incomplete: "
                               f"{', '.join(report.failed)} failed")

    def _cleanup(self, cancel: threading.Event) -> None:
        cleanup.run(self.settings, self.metrics, cancel=cancel)

    def _on_event(self, event: JobEvent) -> None:
        outcome = {EVENT_JOB_MISSED: "missed", EVENT_JOB_MAX_INSTANCES: "skipped"}.get(
            event.code, "failed")
        logger.warning("scheduled {} {} (at {})", event.job_id, outcome,
                       getattr(event, "scheduled_run_time", "?"))
        self.metrics.scheduled_jobs.labels(event.job_id, outcome).inc()


__all__ = ["Scheduler", "build_trigger", "crontab_weekdays", "lower_thread_priority"]


def report_backups_on_disk(settings: Settings, metrics: Metrics) -> None:
    """Set the last-backup gauges from the newest complete set in BACKUP_PATH, whoever wrote it
    (this daemon's scheduler, ``thumbgen backup`` by hand, or a Kubernetes CronJob)."""
    try:
        complete = [s for s in backup.list_sets(settings.backup_path) if s.complete]
    except OSError as exc:  # the backup job will say more; the daemon goes on
        logger.warning("cannot read {}: {}", settings.backup_path, exc)
        return
    if complete:
        metrics.last_backup.set(backup.id_time(complete[-1].set_id) or 0)
        metrics.backup_bytes.set(complete[-1].size)


class BackupGauges:
    """A main-loop tick hook that re-reads BACKUP_PATH every ``interval`` seconds, so the
    "no recent backup" alert sees backups made outside this daemon too."""

    def __init__(self, settings: Settings, metrics: Metrics, interval: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.metrics = metrics
        self.interval = interval
        self.clock = clock
        self._next = 0.0

    def __call__(self, app: object) -> None:
        now = self.clock()
        if now >= self._next:
            self._next = now + self.interval
            report_backups_on_disk(self.settings, self.metrics)
