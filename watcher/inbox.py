"""What counts as an input, and when it is ready: the ignore rules and the settle rule.

Filesystem events and rescans only *suggest* paths (``Settler.suggest``); an event is a hint, never
proof. A path becomes work once its size and mtime have not changed for ``SETTLE_SECONDS``.
"""

from __future__ import annotations

import collections
import fnmatch
import heapq
import itertools
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Temp and system files that uploaders, editors and desktops leave behind.
IGNORED_PATTERNS = ("*.part", "*.crdownload", "*.tmp", "~$*", ".~lock*", ".DS_Store", "Thumbs.db",
                    "desktop.ini")
# one regex for them all, case-insensitive: scans call this once per file
_IGNORED = re.compile("|".join(fnmatch.translate(p.lower()) for p in IGNORED_PATTERNS))


def is_ignored_name(name: str) -> bool:
    """True for names never treated as inputs: hidden, ``_``-prefixed, temp and system files."""
    if name.startswith((".", "_")):
        return True
    return _IGNORED.match(name.lower()) is not None


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


def lane_of(rel: str) -> str:
    """The shop a path belongs to: its first folder; files at the top level share one lane."""
    head, sep, _ = rel.partition("/")
    return head if sep else ""


@dataclass(slots=True)
class _Pending:
    rel: str  # a str, not a PurePosixPath: a backlog of 100 000 paths keeps ~1/3 the bytes
    size: int = -1
    mtime_ns: int = -1
    looked: float | None = None  # when size and mtime were last noted; None: never yet
    hold: float = 0.0  # not handed over before this (defer, busy)


class Settler:
    """Tracks suggested paths until they have been still for ``settle_seconds``, and hands them
    over fairly: shop folders take turns, and within a shop the oldest goes first.

    Thread-safe: the watchdog thread, the poller and the rescans call ``suggest``; the main loop
    calls ``ready`` to collect what has settled. Holds paths only, never file contents, and per
    path no more than its size and mtime (two ints): no stat results are kept.

    A path is looked at (``lstat``) when it arrives (or the scan that found it looked), and again
    when it is taken, never in between. Paths wait in one heap per *lane*, the first folder of the
    path (the top level is one lane too), ordered by (mtime, name); lanes take turns, and a lane
    that was idle comes first, so a photo dropped into a quiet shop is taken next whatever the
    backlog of another. A lane whose oldest path has not been still for ``settle_seconds`` yet
    waits for it (strict oldest first); a file still being written has a fresh mtime, so it sorts
    last and holds no one up. Held paths (``defer``, busy) wait in a separate heap by due time.
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
        self._pending: dict[str, _Pending] = {}
        self._new: collections.deque[_Pending] = collections.deque()  # never looked at
        self._held: list[tuple[float, int, _Pending]] = []  # (hold, sequence, entry)
        self._lanes: dict[str, list[tuple[int, str, _Pending]]] = {}  # (mtime, name, entry)
        self._turns: list[str] = []  # lanes with paths, the next to be served first
        self._sequence = itertools.count()

    # -- what the watchers, scans and workers tell it ------------------------------------------

    def suggest(self, rel: PurePosixPath | str, look: tuple[int, int] | None = None) -> None:
        """A path that may be an input; ``look`` is its (size, mtime_ns) if the caller has just
        read them (a scan), which counts as the first look."""
        key = str(rel)
        with self._lock:
            if key in self._pending:
                # an event on a known path restarts nothing by itself: the next look decides
                return
            entry = self._pending[key] = _Pending(key)
            if look is None:
                self._new.append(entry)
            else:
                entry.size, entry.mtime_ns = look
                entry.looked = self._clock()
                self._to_lane(entry)

    def defer(self, rel: PurePosixPath | str, seconds: float) -> None:
        """Hand ``rel`` over no sooner than ``seconds`` from now (a file released to wait for the
        remote would otherwise come straight back through its own rename event)."""
        key = str(rel)
        with self._lock:
            entry = self._pending.get(key)
            if entry is None:
                entry = self._pending[key] = _Pending(key)
            entry.hold = max(entry.hold, self._clock() + seconds)
            heapq.heappush(self._held, (entry.hold, next(self._sequence), entry))

    def forget(self, rel: PurePosixPath | str) -> None:
        with self._lock:
            self._pending.pop(str(rel), None)

    def __contains__(self, rel: object) -> bool:
        with self._lock:
            return str(rel) in self._pending

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- what the main loop takes ------------------------------------------------------------------

    def ready(self, limit: int, busy: Callable[[PurePosixPath], bool],
              lane_wanted: Callable[[str], bool] | None = None) -> list[PurePosixPath]:
        """Up to ``limit`` paths that have settled, removed from the table, shops in turn.

        Paths that vanished are dropped; ``busy`` paths (queued or in flight) are held and looked
        at again a settle period later. ``lane_wanted`` limits the lanes served this call.
        """
        now = self._clock()
        self._release_held(now)
        self._first_looks(now)
        settled: list[PurePosixPath] = []
        waiting: set[str] = set()  # lanes whose oldest path is not due yet
        looks = 0
        while len(settled) < limit and looks < self.STAT_BUDGET:
            item = self._next_turn(now, waiting, lane_wanted)
            if item is None:
                break
            lane, entry = item
            rel = PurePosixPath(entry.rel)
            if busy(rel):
                self._hold(entry, now + self._settle)
                continue
            if entry.looked != now:  # looked at in this very call: no need to look again
                looks += 1
                found = self._look(entry, now)
                if found is None:
                    continue
                if found:  # changed: its window starts now, and it sorts by its new mtime
                    if self._settle > 0:
                        self._back_to_lane(entry)
                        continue
            with self._lock:
                if self._pending.get(entry.rel) is entry:
                    del self._pending[entry.rel]
                    settled.append(rel)
                    self._served(lane)
        return settled

    def _release_held(self, now: float) -> None:
        with self._lock:
            while self._held and self._held[0][0] <= now:
                hold, _, entry = heapq.heappop(self._held)
                if self._pending.get(entry.rel) is not entry or entry.hold != hold:
                    continue  # forgotten, or held longer since
                if entry.looked is None:
                    self._new.append(entry)
                else:
                    self._to_lane(entry)

    def _first_looks(self, now: float) -> None:
        looks = 0
        while looks < self.STAT_BUDGET:
            with self._lock:
                if not self._new:
                    break
                entry = self._new.popleft()
                if self._pending.get(entry.rel) is not entry or entry.hold > now:
                    continue  # forgotten, or held (it is in the held heap too)
            looks += 1
            if self._look(entry, now) is not None:
                self._back_to_lane(entry)

    def _look(self, entry: _Pending, now: float) -> bool | None:
        """lstat ``entry``: None if it is gone (dropped), else whether size or mtime changed."""
        try:  # outside the lock: on a share one lstat can take milliseconds
            st = os.lstat(self._inbox / entry.rel)
        except OSError:
            st = None
        if st is None or stat.S_ISDIR(st.st_mode):
            with self._lock:
                if self._pending.get(entry.rel) is entry:
                    del self._pending[entry.rel]
            return None
        changed = (entry.size, entry.mtime_ns) != (st.st_size, st.st_mtime_ns)
        entry.size, entry.mtime_ns, entry.looked = st.st_size, st.st_mtime_ns, now
        return changed

    def _next_turn(self, now: float, waiting: set[str],
                   wanted: Callable[[str], bool] | None) -> tuple[str, _Pending] | None:
        """The oldest due path of the first lane in turn that has one, popped from its lane."""
        with self._lock:
            for lane in list(self._turns):
                if lane in waiting or (wanted is not None and not wanted(lane)):
                    continue
                heap = self._lanes[lane]
                while heap:
                    _, _, entry = heap[0]
                    if self._pending.get(entry.rel) is not entry or entry.hold > now:
                        heapq.heappop(heap)  # forgotten, or held (it waits in the held heap)
                        continue
                    if entry.looked is not None and now - entry.looked < self._settle:
                        waiting.add(lane)  # its oldest is still settling: the lane waits
                        break
                    heapq.heappop(heap)
                    return lane, entry
                if not heap:
                    self._drop_lane(lane)
            return None

    def _hold(self, entry: _Pending, until: float) -> None:
        with self._lock:
            if self._pending.get(entry.rel) is entry:
                entry.hold = max(entry.hold, until)
                heapq.heappush(self._held, (entry.hold, next(self._sequence), entry))

    def _back_to_lane(self, entry: _Pending) -> None:
        with self._lock:
            if self._pending.get(entry.rel) is entry:
                self._to_lane(entry)

    def _to_lane(self, entry: _Pending) -> None:
        """Under the lock: queue ``entry`` in its lane; a lane that was idle is served first."""
        lane = lane_of(entry.rel)
        heap = self._lanes.setdefault(lane, [])
        if not heap:  # idle until now: its turn comes first
            if lane in self._turns:
                self._turns.remove(lane)
            self._turns.insert(0, lane)
        heapq.heappush(heap, (entry.mtime_ns, entry.rel, entry))

    def _served(self, lane: str) -> None:
        """Under the lock: ``lane`` gave a path, so it goes to the back of the turns."""
        if lane in self._lanes:
            self._turns.remove(lane)
            self._turns.append(lane)

    def _drop_lane(self, lane: str) -> None:
        del self._lanes[lane]
        self._turns.remove(lane)
