"""What counts as an input, and when it is ready: the ignore rules and the settle rule.

Filesystem events and rescans only *suggest* paths (``Settler.suggest``); an event is a hint, never
proof. A path becomes work once its size and mtime have not changed for ``SETTLE_SECONDS``.
"""

from __future__ import annotations

import fnmatch
import heapq
import itertools
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Temp and system files that uploaders, editors and desktops leave behind.
IGNORED_PATTERNS = ("*.part", "*.crdownload", "*.tmp", "~$*", ".~lock*", ".DS_Store", "Thumbs.db",
                    "desktop.ini")
_IGNORED_LOWER = tuple(p.lower() for p in IGNORED_PATTERNS)


def is_ignored_name(name: str) -> bool:
    """True for names never treated as inputs: hidden, ``_``-prefixed, temp and system files."""
    if name.startswith((".", "_")):
        return True
    lower = name.lower()
    return any(fnmatch.fnmatchcase(lower, pattern) for pattern in _IGNORED_LOWER)


def relative_input(inbox: Path, path: str | os.PathLike[str]) -> PurePosixPath | None:
    """The inbox-relative path of a candidate input, or None if it is not one.

    None when the path lies outside the inbox, or any part of it (folders included) is ignored:
    that keeps ``_processados/``, ``_falhas/`` and ``.thumbgen/`` out without special cases.
    """
    try:
        rel = Path(os.path.abspath(path)).relative_to(inbox)
    except ValueError:
        return None
    parts = rel.parts
    if not parts or any(part in ("..", "") or is_ignored_name(part) for part in parts):
        return None
    return PurePosixPath(*parts)


@dataclass(slots=True)
class _Pending:
    due: float  # when to look at the file next
    size: int = -1
    mtime_ns: int = -1
    looked: bool = False  # size and mtime noted at least once


class Settler:
    """Tracks suggested paths until they have been still for ``settle_seconds``.

    Thread-safe: the watchdog thread and the rescan call ``suggest``; the main loop calls
    ``ready`` to collect what has settled. Holds paths only, never file contents.

    A path is looked at (``lstat``) when it arrives and again each time it is due, never in
    between: paths wait in a heap ordered by when they are due, so a tick does work for what it
    looks at, not for a backlog of ten thousand that is still settling.
    """

    # lstat calls per ``ready``: a burst found by a rescan of a slow share is looked at over a
    # few ticks instead of stalling the main loop (and its watchdog ping) for seconds.
    STAT_BUDGET = 1000

    def __init__(self, inbox: Path, settle_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._inbox = inbox
        self._settle = settle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[PurePosixPath, _Pending] = {}
        # (due, sequence, path, entry); an item whose entry was forgotten or has become due
        # later is stale and skipped when it comes up.
        self._due: list[tuple[float, int, PurePosixPath, _Pending]] = []
        self._sequence = itertools.count()

    def suggest(self, rel: PurePosixPath) -> None:
        with self._lock:
            if rel in self._pending:
                # an event on a known path restarts nothing by itself: the next look decides
                return
            entry = _Pending(due=self._clock())
            self._pending[rel] = entry
            self._schedule(rel, entry)

    def defer(self, rel: PurePosixPath, seconds: float) -> None:
        """Hand ``rel`` over no sooner than ``seconds`` from now (a file released to wait for the
        remote would otherwise come straight back through its own rename event)."""
        with self._lock:
            entry = self._pending.get(rel)
            if entry is None:
                entry = self._pending[rel] = _Pending(due=0.0)
            entry.due = max(entry.due, self._clock() + seconds)
            self._schedule(rel, entry)

    def forget(self, rel: PurePosixPath) -> None:
        with self._lock:
            self._pending.pop(rel, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def ready(self, limit: int, busy: Callable[[PurePosixPath], bool]) -> list[PurePosixPath]:
        """Up to ``limit`` paths that have settled, removed from the table.

        Paths that vanished are dropped; ``busy`` paths (queued or in flight) are skipped and
        looked at again a settle period later.
        """
        now = self._clock()
        settled: list[tuple[PurePosixPath, _Pending]] = []
        again: list[tuple[PurePosixPath, _Pending]] = []
        gone: list[tuple[PurePosixPath, _Pending]] = []
        looks = 0
        while len(settled) < limit and looks < self.STAT_BUDGET:
            item = self._next_due(now)
            if item is None:
                break
            rel, entry = item
            if busy(rel):
                again.append(item)
                continue
            looks += 1
            try:  # outside the lock: on a share one lstat can take milliseconds
                st = os.lstat(self._inbox / rel)
            except OSError:
                gone.append(item)
                continue
            if stat.S_ISDIR(st.st_mode):
                gone.append(item)
                continue
            if not entry.looked or (entry.size, entry.mtime_ns) != (st.st_size, st.st_mtime_ns):
                entry.size, entry.mtime_ns, entry.looked = st.st_size, st.st_mtime_ns, True
                if self._settle > 0:
                    again.append(item)  # new or changed: the window starts now
                    continue
            settled.append(item)
        with self._lock:
            for rel, entry in settled + gone:
                if self._pending.get(rel) is entry:
                    del self._pending[rel]
            for rel, entry in again:
                if self._pending.get(rel) is entry:
                    entry.due = max(entry.due, now + self._settle)  # a defer() meanwhile stands
                    self._schedule(rel, entry)
        return [rel for rel, _ in settled]

    def _schedule(self, rel: PurePosixPath, entry: _Pending) -> None:
        heapq.heappush(self._due, (entry.due, next(self._sequence), rel, entry))

    def _next_due(self, now: float) -> tuple[PurePosixPath, _Pending] | None:
        with self._lock:
            while self._due:
                due, _, rel, entry = self._due[0]
                if self._pending.get(rel) is not entry or entry.due != due:
                    heapq.heappop(self._due)  # stale
                    continue
                if due > now:
                    return None
                heapq.heappop(self._due)
                return rel, entry
            return None
