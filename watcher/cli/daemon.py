"""``run`` (the daemon: private temp folder, malloc settings, health, page, systemd) and the
commands that look at it or at its setup: ``health``, ``diagnose``, ``config``, ``models``."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from watcher import __version__, config
from watcher.cli.backends import build_remover
from watcher.cli.exits import EXIT_FAILED, EXIT_OK
from watcher.errors import make_folder
from watcher.metrics import Metrics

if TYPE_CHECKING:
    from watcher import http
    from watcher.app import App


# A process's own temp folder of a daemon that is gone is removed at the next start after this.
_TMP_LEFT_FOR = 3600.0


def _private_tmp(settings: config.Settings) -> Path:
    """Point temp files (ours and our libraries': onnxruntime writes ``$TMPDIR/.ses``) at
    ``.thumbgen/tmp/<worker-id>``, so the daemon leaves nothing in /tmp, its temp files share
    the inbox's filesystem, and a clean stop can remove them all without touching another
    daemon's. Folders of daemons that are gone (no claim folder, untouched for an hour) go too."""
    root = settings.state_path / "tmp"
    tmp = root / settings.worker_id
    make_folder(tmp, "UPLOAD_PATH")  # under UPLOAD_PATH's .thumbgen/
    claimed = settings.state_path / "claimed"
    for folder in root.iterdir():
        try:
            stale = (folder.is_dir() and not folder.is_symlink() and folder != tmp
                     and not (claimed / folder.name).exists()
                     and time.time() - folder.stat().st_mtime > _TMP_LEFT_FOR)
            if stale:
                shutil.rmtree(folder)
        except OSError:
            continue
    os.environ["TMPDIR"] = str(tmp)
    tempfile.tempdir = None  # forget the cached default, re-read from TMPDIR
    return tmp


def cmd_run(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher.app import App

    tmp = _private_tmp(settings)
    metrics = Metrics()
    cpu_slots = threading.BoundedSemaphore(settings.cpu_workers)  # shared by App and remover
    remover = build_remover(settings, metrics, cpu_slots)
    app = App(settings, remover, metrics, cpu_slots)
    from watcher.scheduler import BackupGauges, Scheduler

    if settings.scheduler_enabled:  # off where a Kubernetes CronJob runs backup and cleanup
        Scheduler(settings, metrics).attach(app)
    app.on_tick.append(BackupGauges(settings, metrics))
    server = _operations(settings, app)
    app.install_signal_handlers()
    # the whole configuration as a field of the JSON log line; the console shows where to look
    logger.bind(configuration=settings.masked()).info(
        "thumbgen {} starting (worker {}); `thumbgen config` lists the configuration",
        __version__, settings.worker_id)
    try:
        return app.run()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)  # a clean stop leaves nothing behind


def _tune_malloc_for_the_daemon() -> None:
    """Two glibc settings that keep the daemon's peak memory down (glibc only; else nothing).

    Buffers of 1 MiB and more (decoded photos, masks) come straight from mmap, so that freeing one
    gives it back: glibc's own threshold climbs to 32 MiB and leaves them in per-thread heaps
    (~40 MB more at peak with two workers on 24 MP photos). And at most two malloc arenas: glibc
    gives each busy thread (workers, onnxruntime's, the log writer's) a heap of its own, up to
    8 per core, each keeping freed memory (~30 MB more at peak). Must run before any thread
    starts: glibc fixes its arena limit when the second thread first allocates."""
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def _operations(settings: config.Settings, app: App) -> http.Server | None:
    """Health checks, systemd notifications and the HTTP server, all hooked onto ``app``."""
    from watcher import http
    from watcher.health import Health
    from watcher.systemd import Notifier
    from watcher.web import Page

    health = Health(app)
    health.attach()
    Notifier(health.live).attach(app)
    page = Page(app)  # the shop's page at /
    page.attach()
    return http.serve(settings, health, app.metrics, page)


def cmd_health(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher import http

    report = http.fetch_health(args.url or http.daemon_url(settings), timeout=args.timeout)
    if report.document is not None:
        print(json.dumps(report.document, indent=2))
    else:
        print(f"thumbgen: {report.error}", file=sys.stderr)
    return report.code


def cmd_diagnose(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher import diagnose

    findings = diagnose.run(settings)
    for finding in findings:
        print(finding.line())
    failed = sum(f.level == diagnose.FAIL for f in findings)
    warned = sum(f.level == diagnose.WARN for f in findings)
    print(f"{failed} failure(s), {warned} warning(s)")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_config(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher import mounts
    from watcher.stages.removal import runtime

    for line in settings.describe():
        print(line)
    watching = mounts.choose(settings.watch_mode, settings.upload_path)
    print(f"\nWatching {settings.upload_path}: {watching.mode} ({watching.why})")
    print(f"Local model: {runtime.plan(settings.local_runtime)}")
    print("\nWhat each photo becomes (OUTPUTS, [outputs.NAME], [folders.\"NAME\"]):")
    for line in settings.plan.describe():
        print(f"  {line}")
    return EXIT_OK


def cmd_models(settings: config.Settings, args: argparse.Namespace) -> int:
    from watcher import models

    path = models.fetch(settings.model_path)
    print(f"model ready: {path} (sha256 verified)")
    return EXIT_OK
