"""The daemon's lifecycle: startup → main loop → drain → shutdown.

Signal handlers only set flags; the main loop does the work. The first SIGTERM/SIGINT asks for a
warm stop (finish or release in-flight files within SHUTDOWN_TIMEOUT, exit 0); a second one forces
it (in-flight claims go straight back to the inbox, exit 1).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from loguru import logger

from watcher import faults, mounts
from watcher.claim import Claims
from watcher.config import Settings
from watcher.errors import make_folder
from watcher.settle import Settler
from watcher.metrics import Metrics
from watcher.model import Job
from watcher.pipeline import Pipeline
from watcher.rescans import Rescans
from watcher.stages.removal.base import Remover
from watcher.watch import InboxHandler, Watch
from watcher.worker import WorkerPool, WorkQueue

TICK_SECONDS = 0.1
# shops with nothing queued that may each get one path past the queue's bound in one tick
MAX_LANES_PER_TICK = 64


@dataclass
class Flags:
    """Set by signal handlers, read by the main loop. Nothing else happens in a handler."""

    stop: threading.Event = field(default_factory=threading.Event)
    force: threading.Event = field(default_factory=threading.Event)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            self.force.set()
        self.stop.set()


class App:
    def __init__(self, settings: Settings, remover: Remover, metrics: Metrics,
                 cpu_slots: threading.Semaphore | None = None) -> None:
        self.settings = settings
        self.remover = remover
        self.metrics = metrics
        self.flags = Flags()
        inbox = settings.upload_path
        self.claims = Claims(inbox, settings.state_path, settings.worker_id,
                             settings.claim_lease_seconds)
        self.settler = Settler(inbox, settings.settle_seconds)
        # shared with the remover when it was given the same one (a remote's local fallback)
        cpu_slots = cpu_slots or threading.BoundedSemaphore(settings.cpu_workers)
        self.pipeline = Pipeline(settings, remover, metrics, cpu_slots)
        threads = settings.cpu_workers + (settings.max_concurrent_requests
                                          if not remover.cpu_bound else 0)
        self.work = WorkQueue(maxsize=max(4, 2 * threads))
        self.pool = WorkerPool(self.pipeline, self.claims, self.work, threads, metrics)
        self.pool.on_released.append(self.settler.defer)  # a file that waits is left alone a while
        # ... but no longer than a rescan period, so files come back soon after an outage ends
        self.pool.release_hold = min(self.pool.release_hold, settings.rescan_interval)
        self.ready = threading.Event()  # set by the scan thread once the start-up scan is done
        self._announced = False  # the on_ready hooks have run
        self.rescans = Rescans(inbox, self.settler, self.work.busy, on_full_scan=self.ready.set)
        self.watch = Watch(inbox, settings.watch_mode,
                           InboxHandler(inbox, self.settler.suggest, self.request_scan),
                           poll_interval=settings.poll_interval)
        self.started = time.time()
        self._next_rescan = 0.0
        self._next_heartbeat = 0.0
        # called every tick by the main loop (systemd STATUS/WATCHDOG, for example)
        self.on_tick: list[Callable[[App], None]] = []
        self.on_ready: list[Callable[[App], None]] = []
        self.on_stopping: list[Callable[[App], None]] = []

    # -- lifecycle -------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.flags.on_signal)

    def run(self) -> int:
        self.startup()
        try:
            self.main_loop()
        finally:
            code = self.shutdown()
        return code

    def startup(self) -> None:
        s = self.settings
        for folder, key in ((s.upload_path, "UPLOAD_PATH"), (s.output_path, "OUTPUT_PATH"),
                            (s.processed_path, "UPLOAD_PATH"), (s.failed_path, "UPLOAD_PATH"),
                            (s.state_path, "UPLOAD_PATH"), (s.background_path, "BACKGROUND_PATH")):
            make_folder(folder, key)  # FolderError (exit 2) naming it, never a traceback
        self.claims.setup()
        self.pipeline.check_setup()
        returned = self.claims.recover()
        if returned:
            logger.info("returned {} claimed file(s) of stopped daemons to the inbox", returned)
        self.pool.start()
        self.watch.start()
        logger.info("watching {} ({} mode: {}), {} CPU worker(s), removal by {}", s.upload_path,
                    self.watch.active_mode, self.watch.why, s.cpu_workers, self.remover.name)
        for mount in mounts.inside(s.upload_path):  # diagnose FAILs on it too
            if mount.needs_polling and self.watch.active_mode == "native":
                logger.warning("no event is heard from the {} mount {} (only rescans would find "
                               "its files)", mount.fstype, mount.point)
            # held from the start: /health is degraded naming it before any photo arrives there
            faults.mounted_inside(self.pipeline.faults, mount, s.upload_path)
        self.rescans.start()
        # on the scan thread, a shop folder at a time: the main loop feeds the first shops while
        # the others are listed; READY once it is done (``tick``)
        self.rescan("start-up")

    def main_loop(self) -> None:
        last_error = 0.0
        while not self.flags.stop.is_set():
            try:
                self.tick()
            except Exception:
                # e.g. the inbox replaced by a file: keep serving health (which reports it) and
                # retry every tick, logging at most every 30 s
                if time.monotonic() - last_error > 30:
                    last_error = time.monotonic()
                    logger.exception("main loop tick failed; retrying")
            self.flags.stop.wait(TICK_SECONDS)

    def tick(self) -> None:
        now = time.monotonic()
        if self.ready.is_set() and not self._announced:  # the start-up scan is done: READY=1
            self._announced = True
            for hook in self.on_ready:
                hook(self)
        if not self.watch.alive():
            logger.error("the file watcher stopped (its thread died, or the inbox folder was "
                         "removed or replaced); restarting it and rescanning")
            self.metrics.observer_restarts.inc()
            try:
                self.watch.restart()
            except OSError as exc:
                # e.g. the inotify watch limit is reached: keep running on rescans, retry next tick
                logger.error("could not restart the file watcher: {}", exc)
            self.rescan("observer restart")
        if self.watch.overflow.event.is_set():
            self.watch.overflow.event.clear()
            logger.warning("the kernel dropped file events (inotify overflow); rescanning")
            self.rescan("overflow")
        if now >= self._next_rescan:
            self.rescan("timer")
        refills = self.settler.refills()
        if refills:  # shops whose window of waiting paths runs low while more wait on disk
            self.rescans.lanes(refills)
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.claims.heartbeat_interval
            self.claims.heartbeat()
            self.claims.recover(include_mine=False)
        self.feed()
        for hook in self.on_tick:
            hook(self)

    def feed(self) -> None:
        """Move settled paths from the settle table onto the bounded work queue; none while a
        fault of the setup would fail every one of them (they wait in the inbox)."""
        free = self.work.free()
        if not self.pipeline.faults:
            for rel in self.settler.ready(free, self.work.busy) if free else ():
                self.work.put(rel)
            # a shop with nothing queued never waits behind another's backlog: one path each,
            # past the queue's bound (WorkQueue), so the next worker that frees up takes it
            for _ in range(MAX_LANES_PER_TICK):
                taken = self.settler.ready(1, self.work.busy, self.work.lacks)
                if not taken:
                    break
                self.work.put(taken[0])
        self.metrics.queue_depth.set(self.queue_depth())
        self.metrics.setup_faults.set(len(self.pipeline.faults.active()))

    def queue_depth(self) -> int:
        return self.settler.waiting() + self.work.qsize()

    def rescan(self, reason: str) -> None:
        """Ask the scan thread for a full scan of the inbox (it runs once however often asked)."""
        self._next_rescan = time.monotonic() + self.settings.rescan_interval
        self.pipeline.faults.recheck()  # local faults (one folder's photos wait) too
        self.metrics.rescans.labels(reason).inc()
        self.rescans.full(reason)

    def request_scan(self, folder: Path) -> None:
        """Called from the watchdog thread when a folder appears: scan it on the scan thread."""
        self.rescans.folder(folder)

    def shutdown(self) -> int:
        """Stop in order: watcher, intake, in-flight work (bounded), then release what is left."""
        logger.info("stopping: no new files are taken")
        for hook in self.on_stopping:
            hook(self)
        # 1. no new events, no more scans
        self.watch.stop()
        self.rescans.stop()
        # 2. workers take nothing new; queued (never claimed) paths just stay in the inbox
        self.pool.stop_taking.set()
        self.work.drain()
        # 3. in-flight files finish within SHUTDOWN_TIMEOUT, unless a second signal says now.
        #    Wait for the worker threads, not for in_flight: a worker that has just taken a path
        #    is not in flight until its claim returns, and the remover is closed next.
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while self.pool.alive() and time.monotonic() < deadline and not self.flags.force.is_set():
            time.sleep(0.05)
        # 4. whatever is still in flight goes back to the inbox for the next start
        abandoned = list(self.pool.in_flight.values())
        released = sum(self._release(job) for job in abandoned)
        if abandoned:
            logger.warning("released {} unfinished file(s) back to the inbox", released)
        if not self.pool.alive():  # no worker can claim anything any more
            self.claims.close()
        self.remover.close()
        logger.info("stopped after {:.0f} s: {} file(s) finished", time.time() - self.started,
                    self.pool.done_count)
        return 1 if self.flags.force.is_set() and abandoned else 0

    def _release(self, job: Job) -> bool:
        if job.claimed is None or not os.path.lexists(job.claimed):  # a claimed link counts too
            return False
        try:
            self.claims.release(job.claimed, job.rel)
            return True
        except OSError as exc:
            logger.error("could not release {}: {}", job.rel, exc)
            return False
