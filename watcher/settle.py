"""When an input is ready: the settle rule, the order shops are served in, and the bounded
window of waiting paths each shop holds.

Filesystem events and rescans only *suggest* paths (``Settler.suggest``); an event is a hint, never
proof. A path becomes work once its size and mtime have not changed for ``SETTLE_SECONDS``.
"""

from __future__ import annotations

import bisect
import collections
import heapq
import itertools
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from watcher.inbox import lane_of


@dataclass(slots=True)
class _Pending:
    rel: str  # a str, not a PurePosixPath: fewer bytes, and no pathlib per scanned file
    size: int = -1
    mtime_ns: int = -1
    looked: float | None = None  # when size and mtime were last noted; None: never yet
    hold: float = 0.0  # not handed over before this (defer, busy)
    queued: tuple[int, str] | None = None  # its key in its lane's window while it waits there


@dataclass(slots=True)
class _Lane:
    """One shop folder's share of the table: a window of its oldest paths, and what lies beyond.

    ``keys`` is sorted, oldest first; a key whose entry left or moved on stays until it is
    reached (``_Pending.queued`` tells the live one). ``count`` is every path of the lane the
    table holds (queued, never looked at, held). ``beyond`` counts inputs on disk it does not
    hold, as the last scan saw them; ``overflow`` says there may be such inputs, so the lane is
    scanned again once its window runs low; ``unseen`` that some were turned away or pushed out
    since, uncounted (the same path may be suggested again and again), so a scan recounts.
    """

    keys: list[tuple[int, str]] = field(default_factory=list)
    live: int = 0  # keys that are live: paths looked at, waiting in the window
    count: int = 0
    beyond: int = 0
    overflow: bool = False
    scanning: bool = False
    next_refill: float = 0.0
    unseen: bool = False  # inputs turned away on arrival since the last scan began: recount
    scan_began: float = 0.0
    next_recount: float = 0.0  # a scan costs at most a tenth of the time
    in_turns: bool = False

    def idle(self) -> bool:
        return not (self.count or self.beyond or self.overflow or self.scanning
                    or self.unseen or self.in_turns)


class Settler:
    """Tracks suggested paths until they have been still for ``settle_seconds``, and hands them
    over fairly: shop folders take turns, and within a shop the oldest goes first.

    Thread-safe: the watchdog thread, the poller and the scan thread call ``suggest``; the main
    loop calls ``ready`` to collect what has settled. Holds paths only, never file contents, and
    per path no more than its size and mtime (two ints): no stat results are kept.

    **Bounded.** Each *lane* (the first folder of the path; the top level is one lane too) holds
    at most ``window`` paths looked at: the oldest known by (mtime, name). One more pushes out
    the lane's newest (maybe itself), which stays in the inbox; the lane is scanned again
    (``refills``) once its window is half drained, and the scan offers its ``window`` oldest and
    counts the rest (``scan_done``). A backlog of 100 000 costs ``window`` paths per shop, and
    nothing is lost: the lane is scanned again until a scan finds no more than it holds.

    A path is looked at (``lstat``) when it arrives (or the scan that found it looked), and again
    when it is taken, never in between. Lanes take turns, and a lane that was idle comes first,
    so a photo dropped into a quiet shop is taken next whatever the backlog of another. A lane
    whose oldest path has not been still for ``settle_seconds`` yet waits for it (strict oldest
    first); a file still being written has a fresh mtime, so it sorts last and holds no one up.
    Held paths (``defer``, busy) wait in a separate heap by due time.
    """

    # lstat calls per ``ready``: a burst found by a rescan of a slow share is looked at over a
    # few ticks instead of stalling the main loop (and its watchdog ping) for seconds.
    STAT_BUDGET = 1000
    # paths held per lane: enough to keep every worker busy between two scans of a big backlog
    WINDOW = 512
    # inputs turned away on arrival are counted by the lane's next scan, no sooner than this
    RECOUNT_SECONDS = 10.0

    def __init__(self, inbox: Path, settle_seconds: float,
                 clock: Callable[[], float] = time.monotonic, window: int = WINDOW) -> None:
        self._inbox = inbox
        self._settle = settle_seconds
        self._clock = clock
        self.window = window
        self._lock = threading.Lock()
        self._pending: dict[str, _Pending] = {}
        self._new: collections.deque[_Pending] = collections.deque()  # never looked at
        self._held: list[tuple[float, int, _Pending]] = []  # (hold, sequence, entry)
        self._lanes: dict[str, _Lane] = {}
        self._turns: list[str] = []  # lanes with queued paths, the next to be served first
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
            name = lane_of(key)
            lane = self._lane(name)
            if look is None:
                # not looked at yet, so its age is unknown: it is held until its first look
                # decides (``_trim``), unless the lane is flooded, or its window is full while
                # more wait on disk: then the lane's next scan sorts it in, at no lstat now (a
                # poll suggests a changed folder's every file again, on a share)
                if lane.count >= 2 * self.window or (lane.overflow
                                                     and lane.live >= self.window):
                    self._turn_away(lane)
                    return
                self._new.append(self._add(key, lane))
                return
            entry = self._add(key, lane)
            entry.size, entry.mtime_ns = look
            entry.looked = self._clock()
            self._queue(entry, name, lane)
            self._trim(lane)

    def defer(self, rel: PurePosixPath | str, seconds: float) -> None:
        """Hand ``rel`` over no sooner than ``seconds`` from now (a file released to wait for the
        remote would otherwise come straight back through its own rename event)."""
        key = str(rel)
        with self._lock:
            entry = self._pending.get(key)
            if entry is None:  # held past the window: bounded by the files in flight
                entry = self._add(key, self._lane(lane_of(key)))
            self._hold_locked(entry, self._clock() + seconds)

    def forget(self, rel: PurePosixPath | str) -> None:
        with self._lock:
            entry = self._pending.get(str(rel))
            if entry is not None:
                self._drop(entry)

    def __contains__(self, rel: object) -> bool:
        with self._lock:
            return str(rel) in self._pending

    def __len__(self) -> int:
        """Paths held in memory (at most ``window`` a lane, plus those held back)."""
        with self._lock:
            return len(self._pending)

    def waiting(self) -> int:
        """Inputs waiting: those held plus those a lane's scan saw beyond its window."""
        with self._lock:
            return sum(lane.count + lane.beyond for lane in self._lanes.values())

    # -- scans: what fills a lane's window -------------------------------------------------------

    def refills(self) -> list[str]:
        """Lanes to scan again: they turned inputs away and their window is half drained (a
        lane whose scan failed waits 5 s), or inputs arrived that no count holds yet (at most
        every ``RECOUNT_SECONDS``, or ten times the lane's last scan). Each is marked as
        scanning until ``scan_done``."""
        now = self._clock()
        with self._lock:
            due = [name for name, lane in self._lanes.items() if not lane.scanning and (
                (lane.overflow and now >= lane.next_refill and lane.count <= self.window // 2)
                or (lane.unseen and now >= lane.next_recount))]
            for name in due:
                self._lanes[name].scanning = True
        return due

    def scan_started(self, name: str) -> None:
        """A scan of lane ``name`` starts: inputs turned away from now on mark it again."""
        with self._lock:
            lane = self._lane(name)
            lane.scanning, lane.overflow, lane.unseen = True, False, False
            lane.scan_began = self._clock()

    def scan_done(self, name: str, oldest: list[tuple[int, str, int]], found: int) -> None:
        """The scan of lane ``name`` found ``found`` inputs; ``oldest`` holds the ``window``
        oldest as (mtime_ns, rel, size), looked at by the scan."""
        now = self._clock()
        with self._lock:
            lane = self._lane(name)
            lane.scanning = False
            lane.next_recount = now + max(self.RECOUNT_SECONDS, 10 * (now - lane.scan_began))
            lane.overflow = lane.overflow or found > len(oldest)
            for mtime_ns, rel, size in oldest:
                if rel not in self._pending:
                    entry = self._add(rel, lane)
                    entry.size, entry.mtime_ns, entry.looked = size, mtime_ns, now
                    self._queue(entry, name, lane)
            unseen = lane.unseen  # turned away while the scan ran: to be counted by the next
            self._trim(lane)
            lane.unseen = unseen
            # what the scan found that the lane does not hold (held paths it found are not
            # counted twice, whether or not they are among its oldest)
            lane.beyond = max(0, found - lane.count)
            self._tidy(name, lane)

    def scan_failed(self, name: str) -> None:
        """The scan of lane ``name`` did not finish: try again later."""
        with self._lock:
            lane = self._lane(name)
            lane.scanning, lane.overflow = False, True
            lane.next_refill = self._clock() + 5.0

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
                    self._drop(entry)
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
                    self._queue(entry, lane_of(entry.rel))

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
                self._back_to_lane(entry, trim=True)

    def _look(self, entry: _Pending, now: float) -> bool | None:
        """lstat ``entry``: None if it is gone (dropped), else whether size or mtime changed."""
        try:  # outside the lock: on a share one lstat can take milliseconds
            st = os.lstat(self._inbox / entry.rel)
        except OSError:
            st = None
        if st is None or stat.S_ISDIR(st.st_mode):
            with self._lock:
                if self._pending.get(entry.rel) is entry:
                    self._drop(entry)
            return None
        changed = (entry.size, entry.mtime_ns) != (st.st_size, st.st_mtime_ns)
        entry.size, entry.mtime_ns, entry.looked = st.st_size, st.st_mtime_ns, now
        return changed

    def _next_turn(self, now: float, waiting: set[str],
                   wanted: Callable[[str], bool] | None) -> tuple[str, _Pending] | None:
        """The oldest due path of the first lane in turn that has one, taken from its window."""
        with self._lock:
            for name in list(self._turns):
                if name in waiting or (wanted is not None and not wanted(name)):
                    continue
                lane = self._lanes[name]
                keys = lane.keys
                while keys:
                    entry = self._pending.get(keys[0][1])
                    if entry is None or entry.queued != keys[0]:
                        del keys[0]  # left the window since: forgotten, held, or re-sorted
                        continue
                    if entry.looked is not None and now - entry.looked < self._settle:
                        waiting.add(name)  # its oldest is still settling: the lane waits
                        break
                    del keys[0]
                    self._unqueue(entry, lane)
                    return name, entry
                if not keys:
                    self._turns.remove(name)
                    lane.in_turns = False
                    self._tidy(name, lane)
            return None

    def _hold(self, entry: _Pending, until: float) -> None:
        with self._lock:
            if self._pending.get(entry.rel) is entry:
                self._hold_locked(entry, until)

    def _hold_locked(self, entry: _Pending, until: float) -> None:
        entry.hold = max(entry.hold, until)
        self._unqueue(entry, self._lanes[lane_of(entry.rel)])  # out of its window until then
        heapq.heappush(self._held, (entry.hold, next(self._sequence), entry))

    def _back_to_lane(self, entry: _Pending, trim: bool = False) -> None:
        with self._lock:
            if self._pending.get(entry.rel) is entry:
                name = lane_of(entry.rel)
                self._queue(entry, name)
                if trim:
                    self._trim(self._lanes[name])

    # -- under the lock ----------------------------------------------------------------------------

    def _lane(self, name: str) -> _Lane:
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane()
        return lane

    def _add(self, key: str, lane: _Lane) -> _Pending:
        entry = self._pending[key] = _Pending(key)
        lane.count += 1
        return entry

    def _drop(self, entry: _Pending) -> None:
        del self._pending[entry.rel]
        name = lane_of(entry.rel)
        lane = self._lanes[name]
        self._unqueue(entry, lane)
        lane.count -= 1
        self._tidy(name, lane)

    def _tidy(self, name: str, lane: _Lane) -> None:
        if lane.idle():
            del self._lanes[name]

    def _queue(self, entry: _Pending, name: str, lane: _Lane | None = None) -> None:
        """Put ``entry`` in its lane's window by (mtime, name); a lane that was idle is served
        first."""
        lane = lane or self._lanes[name]
        if not lane.in_turns:  # idle until now: its turn comes first
            self._turns.insert(0, name)
            lane.in_turns = True
        if entry.queued is None:
            lane.live += 1
        entry.queued = (entry.mtime_ns, entry.rel)  # a key it had is left behind, stale
        bisect.insort(lane.keys, entry.queued)
        if len(lane.keys) > 4 * self.window:  # mostly keys that left: keep the live ones
            lane.keys = [k for k in lane.keys if self._live(k)]

    @staticmethod
    def _unqueue(entry: _Pending, lane: _Lane) -> None:
        if entry.queued is not None:
            entry.queued = None
            lane.live -= 1

    def _live(self, key: tuple[int, str]) -> bool:
        entry = self._pending.get(key[1])
        return entry is not None and entry.queued == key

    def _trim(self, lane: _Lane) -> None:
        """While ``lane``'s window holds more than ``window`` paths that were looked at, push out
        the newest. Paths not looked at yet are not pushed out for them: their age is unknown."""
        keys = lane.keys
        while lane.live > self.window and keys:
            key = keys.pop()
            if self._live(key):
                self._drop(self._pending[key[1]])
                self._turn_away(lane)

    @staticmethod
    def _turn_away(lane: _Lane) -> None:
        """An input of ``lane`` stays in the inbox unheld: a later scan of the lane finds it and
        counts it (not counted here: the same path may be suggested and turned away again)."""
        lane.overflow = lane.unseen = True

    def _served(self, lane: str) -> None:
        """``lane`` gave a path, so it goes to the back of the turns."""
        if lane in self._lanes and self._lanes[lane].in_turns:
            self._turns.remove(lane)
            self._turns.append(lane)
