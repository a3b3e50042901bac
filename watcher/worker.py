"""The pool that drains the work queue through the pipeline.

The queue is bounded and holds inbox-relative paths, never images. Each worker thread claims a
path, runs the pipeline on it, and logs one summary line with per-stage durations.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from pathlib import PurePosixPath

from loguru import logger

from watcher.claim import Claims
from watcher.errors import UNEXPECTED
from watcher.faults import claim_failed
from watcher.inbox import lane_of
from watcher.metrics import Metrics
from watcher.model import Job, JobStatus
from watcher.pipeline import Pipeline

# A file put back in the inbox to wait (remote down, disk full) is not taken again for this long:
# its own rename back would otherwise bring it straight round, decoding it every settle period.
RELEASE_HOLD_SECONDS = 30.0


class WorkQueue:
    """A bounded queue of paths, served shop by shop, plus the set of paths queued or in flight
    (to avoid doubles).

    Each shop folder (``inbox.lane_of``) has its own FIFO and the shops take turns at ``get``, a
    quiet shop (nothing queued, nothing in flight) first: a photo dropped into it is taken by the
    next worker that frees up, not after the backlog another shop's dump put ahead of it. A shop
    whose only queued photo was just taken is not quiet: it goes to the back, or with every shop
    backlogged and one path queued each, the shop served last would be served again and again.
    ``put``
    refuses past ``maxsize``, except for a shop with nothing queued: the bound is ``maxsize``
    plus one path per such shop.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._lanes: dict[str, collections.deque[PurePosixPath]] = {}
        self._turns: collections.deque[str] = collections.deque()  # next to serve first
        self._size = 0
        self._busy: set[PurePosixPath] = set()
        self._active: collections.Counter[str] = collections.Counter()  # busy paths per shop
        self._lock = threading.Lock()
        self._nonempty = threading.Condition(self._lock)

    def free(self) -> int:
        return max(0, self.maxsize - self.qsize())

    def qsize(self) -> int:
        with self._lock:
            return self._size

    def busy(self, rel: PurePosixPath) -> bool:
        with self._lock:
            return rel in self._busy

    def lacks(self, lane: str) -> bool:
        """True when shop folder ``lane`` has nothing queued: ``put`` takes one past the bound."""
        with self._lock:
            return lane not in self._lanes

    def put(self, rel: PurePosixPath) -> bool:
        lane = lane_of(str(rel))
        with self._lock:
            if rel in self._busy or (self._size >= self.maxsize and lane in self._lanes):
                return False
            if lane not in self._lanes:
                self._lanes[lane] = collections.deque()
                if self._active[lane]:  # its last path is in flight: it waits its turn
                    self._turns.append(lane)
                else:  # quiet until now: served first
                    self._turns.appendleft(lane)
            self._lanes[lane].append(rel)
            self._size += 1
            self._busy.add(rel)
            self._active[lane] += 1
            self._nonempty.notify()
            return True

    def get(self, timeout: float) -> PurePosixPath | None:
        with self._nonempty:
            if not self._size and not self._nonempty.wait_for(lambda: self._size, timeout):
                return None
            return self._pop()

    def _pop(self) -> PurePosixPath:
        """Under the lock, with something queued: the next shop's oldest path."""
        lane = self._turns.popleft()
        paths = self._lanes[lane]
        rel = paths.popleft()
        if paths:
            self._turns.append(lane)
        else:
            del self._lanes[lane]
        self._size -= 1
        return rel

    def queued(self) -> list[PurePosixPath]:
        """The paths waiting for a worker, shop by shop (for tests and inspection)."""
        with self._lock:
            return [rel for paths in self._lanes.values() for rel in paths]

    def done(self, rel: PurePosixPath) -> None:
        with self._lock:
            self._free(rel)

    def _free(self, rel: PurePosixPath) -> None:
        """Under the lock: ``rel`` is neither queued nor in flight any more."""
        if rel in self._busy:
            self._busy.discard(rel)
            lane = lane_of(str(rel))
            self._active[lane] -= 1
            if not self._active[lane]:
                del self._active[lane]

    def drain(self) -> list[PurePosixPath]:
        """Empty the queue (at shutdown): these paths were never claimed."""
        out = []
        with self._lock:
            while self._size:
                rel = self._pop()
                self._free(rel)
                out.append(rel)
        return out


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
            # a folder that cannot be written, or a mount inside the inbox: the file stays put
            # (a shop folder's fault holds only its photos; the next rescan suggests them again)
            if not claim_failed(self.pipeline.faults, exc, self.claims.inbox / rel,
                                self.claims.mine / rel.parent, self.claims.inbox):
                raise
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
