"""The scheduler: cron parsing, failing and slow jobs, stop, thread priority, a real backup job."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from watcher import backup, config
from watcher.backup import sets as backup_sets
from watcher.config import Settings
from watcher.errors import ConfigError
from watcher.metrics import Metrics
from watcher.scheduler import BackupGauges, Scheduler, build_trigger, crontab_weekdays

EVERY_SECOND = "* * * * * *"
NEVER_SOON = "0 0 1 1 *"


def wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize(("field", "expected"), [
    ("*", "*"), ("0", "sun"), ("7", "sun"), ("1-5", "mon,tue,wed,thu,fri"),
    ("*/2", "sun,tue,thu,sat"), ("mon,WED", "mon,wed"), ("5-7", "sun,fri,sat"),
])
def test_crontab_weekdays_keep_the_crontab_meaning(field: str, expected: str) -> None:
    assert crontab_weekdays(field) == expected


def test_five_and_six_field_schedules() -> None:
    monday = datetime(2026, 11, 30, 12, 0).astimezone()
    assert monday.weekday() == 0
    sunday = build_trigger("BACKUP_SCHEDULE", "0 3 * * 0").get_next_fire_time(None, monday)
    assert (sunday.weekday(), sunday.hour, sunday.minute) == (6, 3, 0)
    every_5s = build_trigger("BACKUP_SCHEDULE", "*/5 * * * * *")
    first = every_5s.get_next_fire_time(None, monday)
    assert every_5s.get_next_fire_time(first, first + timedelta(seconds=1)) - first == \
        timedelta(seconds=5)


@pytest.mark.parametrize("bad", ["99 * * * *", "* * * * 8", "* * * * mon-sun-x", "1 2 3"])
def test_an_unusable_schedule_is_a_config_error_naming_the_key(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_trigger("CLEANUP_SCHEDULE", bad)
    assert caught.value.key == "CLEANUP_SCHEDULE"


def test_config_accepts_an_optional_seconds_field(make_settings: Callable[..., Settings]) -> None:
    assert make_settings(BACKUP_SCHEDULE="*/5  * * * * *").backup_schedule == "*/5 * * * * *"
    assert make_settings().backup_schedule == "0 3 * * *"
    for bad in ("* * * *", "* * * * * * *"):
        with pytest.raises(ConfigError, match="BACKUP_SCHEDULE"):
            make_settings(BACKUP_SCHEDULE=bad)
    assert "BACKUP_SCHEDULE" in config.option_names()


def _scheduler(settings: Settings, jobs: dict, schedule: str = EVERY_SECOND) -> Scheduler:
    return Scheduler(settings, Metrics(CollectorRegistry()), jobs=jobs,
                     schedules={name: schedule for name in jobs})


def _count(scheduler: Scheduler, job: str, outcome: str) -> float:
    value = scheduler.metrics.registry.get_sample_value(
        "thumbgen_scheduled_jobs_total", {"job": job, "outcome": outcome})
    return value or 0.0


def test_a_failing_job_is_counted_and_the_scheduler_goes_on(
        make_settings: Callable[..., Settings]) -> None:
    ran: list[str] = []

    def boom(cancel: threading.Event) -> None:
        ran.append("boom")
        raise RuntimeError("disk on fire")

    scheduler = _scheduler(make_settings(), {"boom": boom, "fine": lambda c: ran.append("fine")})
    scheduler.start()
    try:
        wait_for(lambda: ran.count("boom") >= 2 and ran.count("fine") >= 2)
        assert scheduler.running
    finally:
        scheduler.stop()
    assert _count(scheduler, "boom", "failed") >= 2
    assert _count(scheduler, "fine", "done") >= 2


def test_a_slow_job_never_runs_twice_at_once(make_settings: Callable[..., Settings]) -> None:
    active, most = [0], [0]

    def slow(cancel: threading.Event) -> None:
        active[0] += 1
        most[0] = max(most[0], active[0])
        cancel.wait(2.5)
        active[0] -= 1

    scheduler = _scheduler(make_settings(), {"slow": slow})
    scheduler.start()
    try:
        wait_for(lambda: _count(scheduler, "slow", "skipped") >= 1)
    finally:
        scheduler.stop()
    assert most[0] == 1


def test_stop_abandons_a_running_backup_promptly(make_settings: Callable[..., Settings]) -> None:
    started = threading.Event()

    def long_backup(cancel: threading.Event) -> None:
        started.set()
        cancel.wait(60)
        raise backup.BackupCancelled()

    scheduler = _scheduler(make_settings(), {"backup": long_backup})
    scheduler.start()
    started.wait(5)
    began = time.monotonic()
    scheduler.stop()
    assert time.monotonic() - began < 2
    assert _count(scheduler, "backup", "cancelled") == 1
    scheduler.stop()  # idempotent


def test_jobs_run_at_a_lower_priority_in_their_own_thread_only(
        make_settings: Callable[..., Settings]) -> None:
    seen: list[int] = []
    scheduler = _scheduler(make_settings(), {
        "nice": lambda c: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))})
    before = os.getpriority(os.PRIO_PROCESS, 0)
    scheduler.start()
    try:
        wait_for(lambda: seen)
    finally:
        scheduler.stop()
    assert seen[0] == min(19, before + 10)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the daemon's own threads keep theirs


def test_attached_to_the_app_lifecycle_with_a_real_backup(
        make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(SETTLE_SECONDS=0)
    settings.upload_path.mkdir(parents=True)
    (settings.upload_path / "foto.jpg").write_bytes(b"photo")
    scheduler = Scheduler(settings, Metrics(CollectorRegistry()),
                          schedules={"backup": EVERY_SECOND, "cleanup": NEVER_SOON})
    app = SimpleNamespace(on_ready=[], on_stopping=[])
    scheduler.attach(app)
    for hook in app.on_ready:
        hook(app)
    try:
        wait_for(lambda: any(s.complete for s in backup.list_sets(settings.backup_path)))
    finally:
        for hook in app.on_stopping:
            hook(app)
    assert not scheduler.running
    value = scheduler.metrics.registry.get_sample_value
    assert value("thumbgen_backups_total", {"outcome": "done"}) >= 1
    assert value("thumbgen_last_backup_timestamp_seconds") > 0
    # a restarted daemon reports the newest set on disk, not "never"
    newest = [s for s in backup.list_sets(settings.backup_path) if s.complete][-1]
    again = Scheduler(settings, Metrics(CollectorRegistry()),
                      schedules={"backup": NEVER_SOON, "cleanup": NEVER_SOON})
    again.start()
    again.stop()
    assert again.metrics.registry.get_sample_value("thumbgen_last_backup_timestamp_seconds") == \
        backup.id_time(newest.set_id)


def test_a_backup_with_a_failed_component_is_a_failed_run(
        make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(SETTLE_SECONDS=0)
    real = backup.backup_component

    def disk_full_for_logs(comp: backup.Component, *args: object, **kw: object):
        if comp.name == "logs":
            raise OSError(28, "No space left on device")
        return real(comp, *args, **kw)

    monkeypatch.setattr(backup_sets, "backup_component", disk_full_for_logs)  # what run_backup calls
    scheduler = Scheduler(settings, Metrics(CollectorRegistry()),
                          schedules={"backup": EVERY_SECOND, "cleanup": NEVER_SOON})
    scheduler.start()
    try:
        wait_for(lambda: _count(scheduler, "backup", "failed") >= 2)  # and it keeps trying
    finally:
        scheduler.stop()
    value = scheduler.metrics.registry.get_sample_value
    assert value("thumbgen_backups_total", {"outcome": "failed"}) >= 2
    assert value("thumbgen_last_backup_timestamp_seconds") == 0
    sets = backup.list_sets(settings.backup_path)
    assert sets and all(list(s.archives) == ["produtos", "backgrounds", "thumbnails", "config"]
                        for s in sets)


def test_backup_gauges_see_backups_made_outside_the_daemon(
        make_settings: Callable[..., Settings]) -> None:
    # Kubernetes: the scheduler is off and a CronJob runs `thumbgen backup`; the daemon's
    # last-backup gauge must still move, or the "no recent backup" alert fires forever
    settings = make_settings(SETTLE_SECONDS=0)
    settings.upload_path.mkdir(parents=True)
    (settings.upload_path / "foto.jpg").write_bytes(b"photo")
    metrics = Metrics(CollectorRegistry())
    clock = [0.0]
    gauges = BackupGauges(settings, metrics, interval=300, clock=lambda: clock[0])
    value = metrics.registry.get_sample_value

    gauges(None)
    assert value("thumbgen_last_backup_timestamp_seconds") == 0
    backup.run_backup(settings)  # by hand, as the CronJob does, with its own metrics
    newest = [s for s in backup.list_sets(settings.backup_path) if s.complete][-1]
    gauges(None)
    assert value("thumbgen_last_backup_timestamp_seconds") == 0  # not due yet: no disk reads
    clock[0] = 301
    gauges(None)
    assert value("thumbgen_last_backup_timestamp_seconds") == backup.id_time(newest.set_id)
    assert value("thumbgen_backup_bytes") == newest.size
