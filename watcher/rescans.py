"""Scans of the inbox on a thread of their own, shop folder by shop folder.

A full scan (at start-up, every ``RESCAN_INTERVAL``, after an inotify overflow or an observer
restart) lists each lane (``inbox.lane_of``: a shop folder, or the top level) in turn and offers
the settle table that lane's ``window`` oldest inputs (``Settler.scan_done``); a lane whose window
ran low is scanned again the same way (``Settler.refills``); a folder that appeared is scanned
for what it already held. None of it runs on the main loop, so a scan of 100 000 files delays
neither READY nor the first thumbnail nor the watchdog's ping: the first lane scanned is fed to
the workers while the others are still being listed.

Nothing is lost to a scan: a lane's inputs turned away during its scan mark it for another
(``Settler.scan_started``), and a scan that fails leaves the lane marked (``scan_failed``). A lane
that turned arrivals away is also scanned again to count them (the queue depth), at most every
``Settler.RECOUNT_SECONDS`` or ten times its last scan's duration, whichever is longer: on a slow
share a lane's scans take no more than a tenth of the time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from loguru import logger

from watcher.settle import Settler
from watcher.scan import lane_folders, oldest_in_lane, scan_entries


class Rescans:
    """The scan thread and what it is asked to do; ``full``, ``lanes`` and ``folder`` may be
    called from any thread and return at once (a full scan asked for twice runs once)."""

    def __init__(self, inbox: Path, settler: Settler, busy: Callable[[PurePosixPath], bool],
                 on_full_scan: Callable[[], None] | None = None) -> None:
        self.inbox = inbox
        self.settler = settler
        self.busy = busy
        self.on_full_scan = on_full_scan  # called on the scan thread after each full scan
        self._wake = threading.Condition()
        self._full: str | None = None  # the reason of the full scan asked for
        self._lanes: dict[str, None] = {}  # lanes to scan again, in the order asked
        self._folders: list[Path] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._busy = False  # a scan is running
        self.full_scans = 0  # full scans finished (for tests and inspection)

    # -- asking --------------------------------------------------------------------------------

    def full(self, reason: str) -> None:
        with self._wake:
            if self._full is None:
                self._full = reason
            self._wake.notify()

    def lanes(self, names: list[str]) -> None:
        with self._wake:
            self._lanes.update(dict.fromkeys(names))
            self._wake.notify()

    def folder(self, folder: Path) -> None:
        with self._wake:
            self._folders.append(folder)
            self._wake.notify()

    def idle(self) -> bool:
        """Nothing asked for is left to do (scans running count as not idle)."""
        with self._wake:
            return not (self._full is not None or self._lanes or self._folders or self._busy)

    # -- the thread ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rescans", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the lane being scanned (a full scan is abandoned between lanes)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._wake:
                self._busy = False
                self._wake.wait_for(lambda: self._stopping or self._full is not None
                                    or bool(self._lanes) or bool(self._folders))
                if self._stopping:
                    return
                self._busy = True
                folders, self._folders = self._folders, []
                reason, self._full = self._full, None
                lanes, self._lanes = list(self._lanes), {}
            # new folders first (small, and what a user just moved in), then a full scan, then
            # the lanes asked for that it did not cover (a lane left marked would never refill)
            done: set[str] = set()
            for folder in folders:
                self._guarded(self._scan_folder, folder)
            if reason is not None:
                self._guarded(self._scan_all, reason, done)
            for lane in lanes:
                if lane not in done:
                    self._guarded(self._scan_lane, lane)

    def _guarded(self, scan: Callable[..., object], *args: object) -> None:
        """One scan; this is the thread's per-item boundary: it never dies of an error."""
        try:
            scan(*args)
        except Exception:
            logger.exception("scanning {} failed; the next scan tries again", self.inbox)

    # -- the scans -----------------------------------------------------------------------------

    def _scan_all(self, reason: str, done: set[str]) -> None:
        found = 0
        for lane in ["", *lane_folders(self.inbox)]:
            if self._stopping:
                return
            found += self._scan_lane(lane)
            done.add(lane)
        self.full_scans += 1
        if self.on_full_scan is not None:
            self.on_full_scan()
        if found and reason != "timer":
            logger.info("{} scan found {} file(s) in the inbox", reason, found)

    def _scan_lane(self, lane: str) -> int:
        self.settler.scan_started(lane)
        try:
            oldest, found = oldest_in_lane(self.inbox, lane, self.settler.window)
        except BaseException:
            self.settler.scan_failed(lane)
            raise
        # a path queued for a worker is not the table's any more (its claim decides); left out
        # of the count too, or the lane would seem to hold less than the scan found
        free = [item for item in oldest if not self.busy(PurePosixPath(item[1]))]
        self.settler.scan_done(lane, free, found - (len(oldest) - len(free)))
        return found

    def _scan_folder(self, folder: Path) -> None:
        """A folder created or moved in may already hold files that will get no events."""
        for rel, entry in scan_entries(self.inbox, folder):
            if rel in self.settler or self.busy(rel):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone since it was listed
            # read now, its size and mtime count as the settle table's first look
            self.settler.suggest(rel, (st.st_size, st.st_mtime_ns))
