"""The pool that drains the work queue through the pipeline.

The queue is bounded and holds inbox-relative paths, never images. Each worker thread claims a
path, runs the pipeline on it, and logs one summary line with per-stage durations.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import PurePosixPath

from loguru import logger

from watcher.claim import Claims
from watcher.errors import UNEXPECTED
from watcher.faults import folder_of, is_setup_error
from watcher.metrics import Metrics
from watcher.model import Job, JobStatus
from watcher.pipeline import Pipeline

# A file put back in the inbox to wait (remote down, disk full) is not taken again for this long:
# its own rename back would otherwise bring it straight round, decoding it every settle period.
RELEASE_HOLD_SECONDS = 30.0


class WorkQueue:
    """A bounded FIFO of paths plus the set of paths queued or in flight (to avoid doubles)."""

    def __init__(self, maxsize: int) -> None:
        self._queue: queue.Queue[PurePosixPath] = queue.Queue(maxsize)
        self._busy: set[PurePosixPath] = set()
        self._lock = threading.Lock()

    def free(self) -> int:
        return max(0, self._queue.maxsize - self._queue.qsize())

    def qsize(self) -> int:
        return self._queue.qsize()

    def busy(self, rel: PurePosixPath) -> bool:
        with self._lock:
            return rel in self._busy

    def put(self, rel: PurePosixPath) -> bool:
        with self._lock:
            if rel in self._busy:
                return False
            try:
                self._queue.put_nowait(rel)
            except queue.Full:
                return False
            self._busy.add(rel)
            return True

    def get(self, timeout: float) -> PurePosixPath | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def done(self, rel: PurePosixPath) -> None:
        with self._lock:
            self._busy.discard(rel)

    def drain(self) -> list[PurePosixPath]:
        """Empty the queue (at shutdown): these paths were never claimed."""
        out = []
        while True:
            try:
                rel = self._queue.get_nowait()
            except queue.Empty:
                return out
            self.done(rel)
            out.append(rel)


class WorkerPool:
    def __init__(self, pipeline: Pipeline, claims: Claims, work: WorkQueue, threads: int,
                 metrics: Metrics) -> None:
        self.pipeline = pipeline
        self.claims = claims
        self.work = work
        self.metrics = metrics
        self.stop_taking = threading.Event()
        self._threads = [threading.Thread(target=self._loop, name=f"worker-{n}", daemon=True)
                         for n in range(threads)]
        self._lock = threading.Lock()
        self.in_flight: dict[str, Job] = {}
        self.done_count = 0
        self.counts: dict[JobStatus, int] = {status: 0 for status in JobStatus}
        self.last_progress = time.monotonic()
        self.last_done: str | None = None
        self.release_hold = RELEASE_HOLD_SECONDS
        # called as hook(rel, release_hold) when a file went back to the inbox to wait
        self.on_released: list[Callable[[PurePosixPath, float], None]] = []
        # called with every job that came to an end (the shop's page keeps its gallery so)
        self.on_finished: list[Callable[[Job], None]] = []

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def alive(self) -> int:
        return sum(thread.is_alive() for thread in self._threads)

    def beat(self) -> None:
        """Mark progress: idle workers are not stuck workers."""
        self.last_progress = time.monotonic()

    def _loop(self) -> None:
        name = threading.current_thread().name
        while not self.stop_taking.is_set():
            self.beat()
            rel = self.work.get(timeout=0.2)
            if rel is None:
                continue
            try:
                self._handle(name, rel)
            except Exception:  # the per-item boundary: a bug never kills a worker thread
                logger.bind(file=str(rel)).exception("worker error on {}", rel)
            finally:
                self.work.done(rel)
                with self._lock:
                    self.in_flight.pop(name, None)
                self.metrics.in_flight.set(len(self.in_flight))

    def _handle(self, name: str, rel: PurePosixPath) -> None:
        try:
            claimed = self.claims.claim(rel)
        except OSError as exc:
            if not is_setup_error(exc):
                raise
            # our claim folder cannot be written: every file would fail alike; it stays put
            self.pipeline.faults.folder(folder_of(exc, self.claims.root), exc, "state")
            return
        if claimed is None:
            return  # another daemon won the rename, or the file went away
        job = Job(rel=rel, claimed=claimed, claim_id=self.claims.identity(claimed))
        with self._lock:
            self.in_flight[name] = job
        self.metrics.in_flight.set(len(self.in_flight))
        self.pipeline.run(job, self.claims)
        if job.status is JobStatus.RELEASED:
            for hook in self.on_released:  # before done(): the path is still busy meanwhile
                hook(job.rel, self.release_hold if job.hold is None else job.hold)
        self._record(job)

    def _record(self, job: Job) -> None:
        status = job.status or JobStatus.FAILED
        with self._lock:
            self.counts[status] += 1
            if status in (JobStatus.DONE, JobStatus.REJECTED, JobStatus.FAILED):
                self.done_count += 1
                self.last_done = str(job.rel)
        if status in (JobStatus.DONE, JobStatus.REJECTED, JobStatus.FAILED):
            self.metrics.files.labels(status.value).inc()
        if status in (JobStatus.REJECTED, JobStatus.FAILED):
            self.metrics.failures.labels(job.kind or UNEXPECTED).inc()
        if status is JobStatus.LOST and job.reason:  # not a race lost at the claim itself
            self.metrics.claims_lost.inc()
        for hook in self.on_finished:
            hook(job)
        self.beat()
        total_ms = (time.monotonic() - job.started) * 1000
        stages = ", ".join(f"{k} {v * 1000:.0f}" for k, v in job.durations.items())
        log = logger.bind(file=str(job.rel), outcome=status.value, duration_ms=round(total_ms),
                          stages={k: round(v * 1000, 1) for k, v in job.durations.items()},
                          backend=job.backend, **({"kind": job.kind} if job.kind else {}))
        if status is JobStatus.DONE:
            log.info("done {} in {:.0f} ms ({}) via {}", job.rel, total_ms, stages, job.backend)
        elif status is JobStatus.RELEASED:
            log.log("DEBUG" if job.quiet else "WARNING", "{} waits in the inbox: {}", job.rel,
                    job.reason)
        elif status is JobStatus.LOST:
            log.warning("{} dropped: {}", job.rel, job.reason)
        else:
            log.warning("{} {} in {:.0f} ms: {}", job.rel, status.value, total_ms, job.reason)

    def stop(self, timeout: float) -> list[Job]:
        """Stop taking work; wait up to ``timeout`` for in-flight jobs; return the unfinished."""
        self.stop_taking.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            return list(self.in_flight.values())
