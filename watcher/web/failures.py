"""The rejected photos the page lists, and **Tentar de novo**, which sends one back to the inbox.

The list comes from the ``.erro.txt`` notes in ``_falhas/``: a scan that looks at no more than
``SCAN_LIMIT`` entries, kept for ``REFRESH_SECONDS`` (sooner when the pipeline rejects a photo or
a photo is sent back), holding the newest ``MAX_LISTED``. A note's first two lines are read when
shown, at most ``NOTE_BYTES`` of it.

Sending back moves ``_falhas/<rel>`` to ``produtos/<rel>`` with one rename that never replaces
anything (a name taken gets `` (2)``), through folders that are real folders (a link planted in
the inbox is refused), then removes the note. The daemon sees the file arrive like any other.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from watcher.claim import fsync_dir, move_no_clobber
from watcher.web.files import Refused, read_inside
from watcher.web.recent import walk

NOTE_SUFFIX = ".erro.txt"
SCAN_LIMIT = 50_000
MAX_LISTED = 500
REFRESH_SECONDS = 10.0
NOTE_BYTES = 4096


@dataclass(frozen=True)
class Failure:
    rel: str  # the rejected file, relative to _falhas/
    when: float  # its note's mtime

    @property
    def folder(self) -> str:
        return self.rel.split("/", 1)[0] if "/" in self.rel else ""


class Failures:
    def __init__(self, failed: Path, inbox: Path, *, scan_limit: int = SCAN_LIMIT,
                 max_listed: int = MAX_LISTED, refresh: float = REFRESH_SECONDS) -> None:
        self.failed = failed
        self.inbox = inbox
        self.scan_limit = scan_limit
        self.max_listed = max_listed
        self.refresh = refresh
        self._listed: list[Failure] = []
        self._total = 0
        self._scanned_at = -1e9
        self._lock = threading.Lock()
        self._scan_lock = threading.Lock()

    def stale(self) -> None:
        """Something changed in _falhas/: the next reader scans again."""
        with self._lock:
            self._scanned_at = -1e9

    def listing(self) -> tuple[list[Failure], int]:
        """The newest failures first, and how many notes the scan saw."""
        with self._scan_lock:  # one scan at a time; the others wait for its result
            with self._lock:
                fresh = time.monotonic() - self._scanned_at < self.refresh
            if not fresh:
                self._scan()
        with self._lock:
            return list(self._listed), self._total

    def _scan(self) -> None:
        found = [Failure(rel[:-len(NOTE_SUFFIX)], st.st_mtime)
                 for rel, st in walk(self.failed, self.scan_limit) if rel.endswith(NOTE_SUFFIX)]
        found.sort(key=lambda f: f.when, reverse=True)
        with self._lock:
            self._listed, self._total = found[:self.max_listed], len(found)
            self._scanned_at = time.monotonic()

    def today(self) -> int:
        """Notes written today among those listed (the scan's bound applies)."""
        midnight = time.mktime(time.localtime()[:3] + (0, 0, 0, 0, 0, -1))
        return sum(f.when >= midnight for f in self.listing()[0])

    def find(self, rel: str, since: float) -> Failure | None:
        return next((f for f in self.listing()[0] if f.rel == rel and f.when >= since), None)

    def lines(self, rel: str) -> tuple[str, str]:
        """The note's first two lines: what is wrong, and what to do."""
        try:
            data, _ = read_inside(self.failed, PurePosixPath(rel + NOTE_SUFFIX), 1 << 20)
        except (OSError, Refused):
            return "", ""
        text = data[:NOTE_BYTES].decode("utf-8", "replace").splitlines()
        first = text[0] if text else ""
        second = text[1] if len(text) > 1 and not text[1].startswith("file: ") else ""
        return first, second

    def retry(self, rel: PurePosixPath) -> PurePosixPath:
        """Move ``_falhas/<rel>`` back into the inbox; returns its inbox path (maybe `` (2)``).

        ``Refused`` for a name that is no rejected file here, or a link on the way;
        ``FileNotFoundError`` when it is gone (someone sent it back already)."""
        if rel.name.endswith(NOTE_SUFFIX) or rel.parts[0].startswith("_"):
            raise Refused(f"{rel} is not a rejected photo")
        source = self.failed.joinpath(*rel.parts)
        folder = self.failed
        for part in rel.parts[:-1]:  # only real folders on the way there
            folder = folder / part
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                raise Refused(f"{folder} is not a real folder")
        if not stat.S_ISREG(os.lstat(source).st_mode):
            raise Refused(f"{rel} is not a regular file")
        target_folder = _real_folders(self.inbox, rel.parent)
        where = move_no_clobber(source, target_folder / rel.name)
        fsync_dir(where.parent)
        try:
            os.unlink(source.with_name(source.name + NOTE_SUFFIX))
        except FileNotFoundError:
            pass
        self.stale()
        return PurePosixPath(where.relative_to(self.inbox).as_posix())


def _real_folders(root: Path, rel_dir: PurePosixPath) -> Path:
    """``root/rel_dir``, created where missing; ``Refused`` if any part is a link or a file."""
    current = root
    for part in rel_dir.parts:
        current = current / part
        try:
            current.mkdir()
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(current).st_mode):
                raise Refused(f"{current} is not a real folder") from None
    return current


__all__ = ["Failures", "Failure", "NOTE_SUFFIX"]
