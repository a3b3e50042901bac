"""Backup sets: one run over every component (one at a time, under a lock), listing the sets
on disk, verifying them and keeping them for ``BACKUP_RETENTION_DAYS``."""

from __future__ import annotations

import fcntl
import json
import os
import tarfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from loguru import logger

from watcher.backup.archive import ArchiveResult, backup_component
from watcher.backup.names import (ARCHIVE_SUFFIX, COMPONENTS, FILE_NAME, ID_FORMAT,
                                  ID_IN_NAME, LOCK_NAME, BackupBusy, BackupCancelled,
                                  components, id_time, manifest_path, verified_path)
from watcher.claim import fsync_dir
from watcher.config import Settings
from watcher.metrics import Metrics


# -- a whole set ---------------------------------------------------------------------------------

@dataclass
class BackupReport:
    set_id: str
    archives: list[ArchiveResult] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    pruned: list[Path] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(a.size for a in self.archives)


class _Lock:
    """A non-blocking exclusive ``flock`` on ``BACKUP_PATH/.backup.lock``: one backup at a time."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self.fd = -1

    def __enter__(self) -> _Lock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise BackupBusy(f"another backup is running (lock {self.path})") from None
        except OSError as exc:  # a share without locks: go on; names are never reused anyway
            logger.warning("cannot lock {} ({}); backing up without the lock", self.path, exc)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing the descriptor releases the lock


def _free_id(dest: Path, when: float) -> str:
    """The set ID for ``when``, moved on by a second while any file already uses it."""
    taken = {found for name in os.listdir(dest) for found in ID_IN_NAME.findall(name)}
    while (set_id := datetime.fromtimestamp(when).strftime(ID_FORMAT)) in taken:
        when += 1
    return set_id


def run_backup(settings: Settings, metrics: Metrics | None = None,
               names: Iterable[str] | None = None, *, cancel: threading.Event | None = None,
               now: float | None = None, prune_old: bool = True) -> BackupReport:
    """Back up ``names`` (default: every component) as one set, then apply retention.

    Raises BackupBusy when another backup runs, BackupCancelled when ``cancel`` is set. A
    component that fails (disk full, unreadable folder) is reported in ``failed``; the others
    are still written.
    """
    dest = settings.backup_path
    dest.mkdir(parents=True, exist_ok=True)
    wanted = list(names or COMPONENTS)
    table = components(settings)
    started = time.time()
    with _Lock(dest):
        report = BackupReport(_free_id(dest, started if now is None else now))
        logger.info("backup {} started: {}", report.set_id, ", ".join(wanted))
        for name in wanted:
            if cancel is not None and cancel.is_set():
                raise BackupCancelled()
            try:
                result = backup_component(table[name], dest, report.set_id,
                                          settle=settings.settle_seconds, cancel=cancel)
            except (OSError, tarfile.TarError) as exc:
                report.failed[name] = f"{type(exc).__name__}: {exc}"
                logger.error("backup {} of {} failed: {}", report.set_id, name, exc)
                continue
            report.archives.append(result)
            logger.info("backup {}: {} ({} file(s), {} bytes, {} left out)", report.set_id,
                        result.archive.name, result.files, result.size, result.skipped)
        if prune_old:
            report.pruned = prune(dest, settings.backup_retention_days, metrics=metrics)
    if metrics is not None:
        metrics.backups.labels("failed" if report.failed else "done").inc()
        metrics.backup_bytes.set(report.size)
        if not report.failed:
            metrics.last_backup.set(time.time())
    logger.info("backup {} finished in {:.1f} s: {} archive(s), {} bytes{}", report.set_id,
                time.time() - started, len(report.archives), report.size,
                f", FAILED: {', '.join(report.failed)}" if report.failed else "")
    return report


# -- listing, verifying, retention ---------------------------------------------------------------

@dataclass
class ArchiveInfo:
    component: str
    set_id: str
    path: Path
    size: int
    header: dict[str, Any] | None  # the manifest's first line; None when missing or unreadable
    verified: str | None = None  # "ok" / "failed" from the last ``verify``, if still current

    @property
    def complete(self) -> bool:
        return (self.header is not None and self.header.get("archive", {}).get("size") == self.size)


@dataclass
class BackupSet:
    set_id: str
    archives: dict[str, ArchiveInfo] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every component is present with its manifest: the set restores the whole install."""
        return all(c in self.archives and self.archives[c].complete for c in COMPONENTS)

    @property
    def size(self) -> int:
        return sum(a.size for a in self.archives.values())


def _read_header(path: Path) -> dict[str, Any] | None:
    try:
        with path.open(encoding="utf-8") as fh:
            header = json.loads(fh.readline())
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) else None


def _stamp(archive: Path, header: dict[str, Any] | None, size: int) -> str | None:
    stamp = _read_header(verified_path(archive))
    if not stamp or not header:
        return None
    if (stamp.get("sha256"), stamp.get("size")) != (header["archive"].get("sha256"), size):
        return None  # the archive changed since it was verified
    return "ok" if stamp.get("ok") else "failed"


def list_sets(dest: Path) -> list[BackupSet]:
    """Every backup set in ``dest``, oldest first. Temp files of unfinished archives are ignored."""
    sets: dict[str, BackupSet] = {}
    try:
        names = sorted(os.listdir(dest))
    except FileNotFoundError:
        return []
    for name in names:
        match = FILE_NAME.match(name)
        if not match or match.group("suffix") != ARCHIVE_SUFFIX:
            continue
        path = dest / name
        try:
            size = path.lstat().st_size
        except FileNotFoundError:
            continue
        header = _read_header(manifest_path(path))
        info = ArchiveInfo(match.group("component"), match.group("id"), path, size, header,
                           _stamp(path, header, size))
        sets.setdefault(info.set_id, BackupSet(info.set_id)).archives[info.component] = info
    order = {name: n for n, name in enumerate(COMPONENTS)}
    for found in sets.values():
        found.archives = dict(sorted(found.archives.items(), key=lambda i: order.get(i[0], 99)))
    return [sets[key] for key in sorted(sets)]


def find_set(dest: Path, set_id: str) -> BackupSet | None:
    """The set with this ID; ``latest`` is the newest complete set."""
    sets = list_sets(dest)
    if set_id == "latest":
        complete = [s for s in sets if s.complete]
        return complete[-1] if complete else None
    return next((s for s in sets if s.set_id == set_id), None)


def prune(dest: Path, retention_days: int, *, now: float | None = None,
          metrics: Metrics | None = None) -> list[Path]:
    """Remove archives (and their manifests) older than ``retention_days``.

    Never removes the newest complete set, nor the newest complete archive of any component, so
    every component stays restorable however long backups have been failing. Files whose name
    does not carry a valid set ID are never touched.
    """
    now = time.time() if now is None else now
    cutoff = now - retention_days * 86400
    sets = list_sets(dest)
    keep: set[tuple[str, str]] = set()
    complete = [s for s in sets if s.complete]
    if complete:
        keep |= {(c, complete[-1].set_id) for c in COMPONENTS}
    for component in COMPONENTS:
        good = [s.set_id for s in sets
                if component in s.archives and s.archives[component].complete]
        if good:
            keep.add((component, good[-1]))
    removed = []
    for name in sorted(os.listdir(dest)):
        match = FILE_NAME.match(name)
        if not match or (match.group("component"), match.group("id")) in keep:
            continue
        when = id_time(match.group("id"))
        if when is None or when >= cutoff:
            continue
        try:
            (dest / name).unlink()
        except FileNotFoundError:
            continue
        removed.append(dest / name)
        logger.info("backup retention removed {} (older than {} days)", name, retention_days)
        if metrics is not None and name.endswith(ARCHIVE_SUFFIX):
            metrics.cleanup_removed.labels("backup").inc()
    if removed:
        fsync_dir(dest)
    return removed
