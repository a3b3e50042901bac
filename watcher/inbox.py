"""What counts as an input, and when it is ready: the ignore rules and the settle rule.

Filesystem events and rescans only *suggest* paths (``Settler.suggest``); an event is a hint, never
proof. A path becomes work once its size and mtime have not changed for ``SETTLE_SECONDS``.
"""

from __future__ import annotations

import fnmatch
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


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    stable_since: float


class Settler:
    """Tracks suggested paths until they have been still for ``settle_seconds``.

    Thread-safe: the watchdog thread and the rescan call ``suggest``; the main loop calls
    ``ready`` to collect what has settled. Holds paths only, never file contents.
    """

    def __init__(self, inbox: Path, settle_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._inbox = inbox
        self._settle = settle_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[PurePosixPath, _Pending | None] = {}

    def suggest(self, rel: PurePosixPath) -> None:
        with self._lock:
            if rel in self._pending:
                # an event on a known path restarts nothing by itself: the next stat decides
                return
            self._pending[rel] = None

    def forget(self, rel: PurePosixPath) -> None:
        with self._lock:
            self._pending.pop(rel, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def ready(self, limit: int, busy: Callable[[PurePosixPath], bool]) -> list[PurePosixPath]:
        """Up to ``limit`` paths that have settled, removed from the table.

        Paths that vanished are dropped; ``busy`` paths (queued or in flight) are skipped for now.
        """
        now = self._clock()
        with self._lock:
            candidates = list(self._pending.items())
        settled: list[PurePosixPath] = []
        gone: list[PurePosixPath] = []
        updates: dict[PurePosixPath, _Pending] = {}
        for rel, seen in candidates:
            if len(settled) >= limit:
                break
            if busy(rel):
                continue
            if seen is not None and now - seen.stable_since < self._settle:
                continue  # not due yet: a change inside the window shows at the due check
            try:
                st = os.lstat(self._inbox / rel)
            except OSError:
                gone.append(rel)
                continue
            if stat.S_ISDIR(st.st_mode):
                gone.append(rel)
                continue
            if seen is None or (seen.size, seen.mtime_ns) != (st.st_size, st.st_mtime_ns):
                updates[rel] = _Pending(st.st_size, st.st_mtime_ns, now)
                if self._settle > 0:
                    continue
                seen = updates[rel]
            if now - seen.stable_since >= self._settle:
                settled.append(rel)
        with self._lock:
            for rel in gone:
                self._pending.pop(rel, None)
            for rel in settled:
                self._pending.pop(rel, None)
            for rel, entry in updates.items():
                if rel in self._pending and rel not in settled:
                    self._pending[rel] = entry
        return settled
