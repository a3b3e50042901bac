"""What the gallery shows, without walking the output folder on every request.

``Recent`` keeps the newest ``MAX_RECENT`` photos made (one entry per photo, with every output
it has), fed by the pipeline's results as they come (``record``) and, once at start, by a scan of
the output folder that looks at no more than ``SCAN_LIMIT`` entries (``load``). A request reads
the index only: 100 000 thumbnails on disk cost the scan's bound once, never per page.

It also counts the photos done and failed today (the daemon's local day), from the same two
sources.
"""

from __future__ import annotations

import heapq
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePosixPath

from watcher.outputs import PRESETS, Plan, output_rel

MAX_RECENT = 2000
SCAN_LIMIT = 50_000
# where a processed original may be, by extension (the output keeps only the stem)
_INPUT_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".JPG", ".JPEG", ".PNG", ".WEBP")


@dataclass(frozen=True)
class Made:
    """One photo's thumbnails: ``key`` is its inbox path without the extension."""

    key: str
    outputs: tuple[str, ...]  # relative to OUTPUT_PATH
    original: str | None  # relative to the inbox (in _processados/), when it is there
    when: float

    @property
    def folder(self) -> str:
        """The shop folder: the first folder of the inbox path, '' for the inbox itself."""
        return self.key.split("/", 1)[0] if "/" in self.key else ""

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def walk(root: Path, limit: int) -> Iterator[tuple[str, os.stat_result]]:
    """(relative posix path, lstat) of regular files under ``root``, hidden names skipped, at
    most ``limit`` entries looked at; links are not followed."""
    stack, seen = [(root, "")], 0
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError:
            continue
        with entries:
            for entry in entries:
                seen += 1
                if seen > limit:
                    return
                if entry.name.startswith("."):
                    continue
                rel = prefix + entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((Path(entry.path), rel + "/"))
                    elif entry.is_file(follow_symlinks=False):
                        yield rel, entry.stat(follow_symlinks=False)
                except OSError:
                    continue


class Recent:
    def __init__(self, output: Path, inbox: Path, plan: Plan, *, max_recent: int = MAX_RECENT,
                 scan_limit: int = SCAN_LIMIT) -> None:
        self.output = output
        self.inbox = inbox
        self.processed = inbox / "_processados"
        self.plan = plan
        self.max_recent = max_recent
        self.scan_limit = scan_limit
        self._made: OrderedDict[str, Made] = OrderedDict()  # oldest first
        self._days: dict[tuple[date, str], int] = {}
        self._lock = threading.Lock()
        self.version = 0  # changes whenever the gallery does

    # -- feeding -------------------------------------------------------------------------------

    def record(self, rel: PurePosixPath, when: float | None = None) -> Made:
        """A photo at ``rel`` (inbox-relative) was just made into its outputs."""
        specs = self.plan.for_rel(rel)
        outputs = tuple(output_rel(rel, spec, self.plan.by_name).as_posix() for spec in specs)
        original = PurePosixPath("_processados", rel)
        made = Made(rel.with_suffix("").as_posix(), outputs,
                    original.as_posix() if (self.inbox / original).is_file() else None,
                    when if when is not None else time.time())
        self._add(made)
        self.count(made.when, "done")
        return made

    def count(self, when: float, what: str, n: int = 1) -> None:
        day = date.fromtimestamp(when)
        with self._lock:
            self._days[(day, what)] = self._days.get((day, what), 0) + n
            for old in [k for k in self._days if k[0] < day]:
                del self._days[old]

    def today(self, what: str) -> int:
        with self._lock:
            return self._days.get((date.today(), what), 0)

    def _add(self, made: Made) -> None:
        with self._lock:
            self._made.pop(made.key, None)
            self._made[made.key] = made
            while len(self._made) > self.max_recent:
                self._made.popitem(last=False)
            self.version += 1

    def load(self) -> int:
        """At start: the newest outputs already on disk, looking at ``scan_limit`` entries at
        most. Returns how many photos it found."""
        newest = heapq.nlargest(self.max_recent * 4, walk(self.output, self.scan_limit),
                                key=lambda item: item[1].st_mtime)
        groups: dict[str, tuple[list[str], float]] = {}
        for rel, st in newest:
            key = self._input_key(PurePosixPath(rel))
            outputs, when = groups.setdefault(key, ([], st.st_mtime))
            outputs.append(rel)
            groups[key] = (outputs, max(when, st.st_mtime))
        today = date.today()
        found = sorted(groups.items(), key=lambda item: item[1][1])[-self.max_recent:]
        for key, (outputs, when) in found:
            self._add(Made(key, tuple(sorted(outputs, key=self._order)), self._original(key),
                           when))
            if date.fromtimestamp(when) == today:
                self.count(when, "done")
        return len(found)

    def _order(self, rel: str) -> tuple[int, str]:
        """Outputs found on disk in the order OUTPUTS names them, as when they are made."""
        names = [spec.name for spec in self.plan.outputs] + list(self.plan.specs)
        first = rel.split("/", 1)[0]
        return (names.index(first) if first in names else len(names), rel)

    def _input_key(self, rel: PurePosixPath) -> str:
        """The inbox path (without extension) an output file was made from."""
        first = rel.parts[0] if len(rel.parts) > 1 else None
        if first in self.plan.specs and self.plan.by_name:  # the output's name is the first folder
            return PurePosixPath(*rel.parts[1:]).with_suffix("").as_posix()
        if first in PRESETS and not (self.inbox / first).is_dir():
            # an output's folder of an earlier configuration (OUTPUTS changed since), not a shop
            return PurePosixPath(*rel.parts[1:]).with_suffix("").as_posix()
        return rel.with_suffix("").as_posix()

    def _original(self, key: str) -> str | None:
        for suffix in _INPUT_SUFFIXES:
            candidate = PurePosixPath("_processados", key + suffix)
            if (self.inbox / candidate).is_file():
                return candidate.as_posix()
        return None

    # -- reading -------------------------------------------------------------------------------

    def page(self, number: int, size: int, folder: str | None) -> tuple[list[Made], int]:
        """Newest first: page ``number`` (from 1) of ``size`` photos of ``folder`` (None: all),
        and how many there are."""
        with self._lock:
            chosen = [m for m in reversed(self._made.values())
                      if folder is None or m.folder == folder]
        start = (number - 1) * size
        return chosen[start:start + size], len(chosen)

    def find(self, key: str, since: float) -> Made | None:
        with self._lock:
            made = self._made.get(key)
        return made if made is not None and made.when >= since else None

    def folders(self) -> set[str]:
        with self._lock:
            return {m.folder for m in self._made.values() if m.folder}


__all__ = ["Recent", "Made", "walk", "MAX_RECENT", "SCAN_LIMIT"]
