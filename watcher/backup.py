"""Backups: one ``tar.gz`` per component, written atomically, with a sha256 manifest beside it.

A backup set is every archive that shares one ID, the local time it started
(``produtos_20261129_030000.tar.gz``, ``config_20261129_030000.tar.gz``, …). Each archive is
written to a hidden temp name in ``BACKUP_PATH``, fsynced and renamed to its final name (never
over an existing one); then its manifest (``<name>.manifest.jsonl``) is written the same way. The
manifest is the commit mark: an archive without one is incomplete. Its first line is a header
(archive size and sha256, counts, what was left out); every other line is one member with its
own sha256, so ``verify`` can check the archive and every file in it.

Left out on purpose: the daemon's own state (``.thumbgen/``: claims, temp files, cache), its
temp files anywhere, ``BACKUP_PATH`` itself, and files changed within the settle window (still
being written; the manifest names them). Append-only logs are the exception: the live
``app.log`` is archived as a snapshot of what it held when it was read.

An archive and its manifest are never readable by more people than its files were: world-readable
only if every file and folder in it is; group-readable only if every one is readable by a group
that is also the archive's. The ``config`` manifest's header also records the settings in force
(``settings``, secrets masked), since the daemon may be configured from outside that folder
(``/etc/thumbgen`` under systemd, a ConfigMap and env on Kubernetes).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
import tarfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from loguru import logger

from watcher import __version__
from watcher.claim import fsync_dir
from watcher.config import Settings
from watcher.metrics import Metrics
from watcher.stages.publish import TEMP_SUFFIX

COMPONENTS = ("produtos", "backgrounds", "thumbnails", "config", "logs")
ID_FORMAT = "%Y%m%d_%H%M%S"
ARCHIVE_SUFFIX = ".tar.gz"
MANIFEST_SUFFIX = ".manifest.jsonl"
VERIFIED_SUFFIX = ".verified.json"
MANIFEST_FORMAT = 1
LOCK_NAME = ".backup.lock"
CHUNK = 1024 * 1024
# Photos barely compress; level 6 costs a fraction of level 9's CPU for the same size.
COMPRESS_LEVEL = 6
_NAME = re.compile(r"^(?P<component>[a-z]+)_(?P<id>\d{8}_\d{6})(?P<suffix>\.tar\.gz|"
                   r"\.manifest\.jsonl|\.verified\.json)$")
_ID_IN_NAME = re.compile(r"_(\d{8}_\d{6})\b")


class BackupCancelled(Exception):
    """The daemon is stopping; the archive in progress was abandoned (its temp file removed)."""


class BackupBusy(Exception):
    """Another backup holds the lock of ``BACKUP_PATH``."""


@dataclass(frozen=True)
class Component:
    name: str
    root: Path
    exclude: tuple[Path, ...] = ()
    # append-only files (logs) are archived as a snapshot even while they are being written
    snapshot_growing: bool = False
    # written into the manifest's header as ``settings`` (the config component's)
    settings: dict[str, Any] | None = None


def components(settings: Settings) -> dict[str, Component]:
    """Component name → what it archives. ``config`` is ``BASE_PATH/config`` and a record of the
    settings in force."""
    exclude = (settings.state_path, settings.backup_path)
    return {
        "produtos": Component("produtos", settings.upload_path, exclude),
        "backgrounds": Component("backgrounds", settings.background_path, exclude),
        "thumbnails": Component("thumbnails", settings.output_path, exclude),
        "config": Component("config", settings.base_path / "config", exclude,
                            settings=effective_settings(settings)),
        "logs": Component("logs", settings.log_path, exclude, snapshot_growing=True),
    }


def effective_settings(settings: Settings) -> dict[str, Any]:
    """What ``thumbgen config`` prints, for the manifest: KEY → value (secrets masked), and
    KEY → where it came from. The settings of the process that makes the backup."""
    return {"note": "the settings in force in the process that made this backup, secrets masked",
            "values": settings.masked(), "sources": dict(settings.sources)}


def is_own_temp(name: str) -> bool:
    """A temp file thumbgen writes: hidden, ending in ``.tmp``. Never a user's file or output."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def archive_name(component: str, set_id: str) -> str:
    return f"{component}_{set_id}{ARCHIVE_SUFFIX}"


def manifest_path(archive: Path) -> Path:
    return archive.with_name(archive.name[: -len(ARCHIVE_SUFFIX)] + MANIFEST_SUFFIX)


def verified_path(archive: Path) -> Path:
    return archive.with_name(archive.name[: -len(ARCHIVE_SUFFIX)] + VERIFIED_SUFFIX)


def id_time(set_id: str) -> float | None:
    """Unix time of a set ID (local time), or None if it is not a valid date."""
    try:
        return datetime.strptime(set_id, ID_FORMAT).timestamp()
    except ValueError:
        return None


# -- writing -------------------------------------------------------------------------------------

class _HashingWriter:
    """File-like sink that hashes and counts what is written through it (the archive bytes)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


class _HashingReader:
    """File-like source that hashes what tar reads from it, and stops when asked to."""

    def __init__(self, raw: IO[bytes], cancel: threading.Event | None) -> None:
        self.raw = raw
        self.cancel = cancel
        self.sha = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        if self.cancel is not None and self.cancel.is_set():
            raise BackupCancelled()
        data = self.raw.read(size)
        self.sha.update(data)
        return data


@dataclass
class _Tally:
    entries: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    # the group and other read bits every archived file and folder has, and their groups
    readable: int = 0o044
    groups: set[int] = field(default_factory=set)

    def seen(self, st: os.stat_result) -> None:
        self.readable &= st.st_mode
        self.groups.add(st.st_gid)

    def mode(self, archive_gid: int) -> int:
        """The archive's mode: no wider than what it holds."""
        if self.readable & 0o004:
            return 0o644
        if self.readable & 0o040 and self.groups <= {archive_gid}:
            return 0o640
        return 0o600

    def skip(self, rel: str, reason: str) -> None:
        self.skipped.append({"path": rel, "reason": reason})


def _add_file(tar: tarfile.TarFile, comp: Component, path: Path, rel: str, tally: _Tally,
              settle: float, now: float, cancel: threading.Event | None) -> None:
    try:
        # O_NOFOLLOW: a link is not archived; O_NONBLOCK: a FIFO does not hang the open
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return tally.skip(rel, "vanished while the backup ran")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return tally.skip(rel, "symbolic link (not archived)")
        return tally.skip(rel, f"unreadable: {exc.strerror}")
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return tally.skip(rel, "not a regular file")
        growing = abs(now - st.st_mtime) < settle
        if growing and not comp.snapshot_growing:
            return tally.skip(rel, f"still being written (changed {abs(now - st.st_mtime):.1f} s "
                                   "before the backup)")
        tally.seen(st)
        info = tarfile.TarInfo(rel)
        info.size, info.mtime, info.mode = st.st_size, st.st_mtime, stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        reader = _HashingReader(fh, cancel)
        tar.addfile(info, reader)
        _forget_pages(fd)
        entry: dict[str, Any] = {"path": rel, "type": "file", "size": st.st_size,
                                 "sha256": reader.sha.hexdigest()}
        if growing:
            entry["snapshot"] = True
        tally.entries.append(entry)
        after = os.fstat(fd)
        if not growing and (after.st_mtime_ns, after.st_size) != (st.st_mtime_ns, st.st_size):
            tally.warnings.append({"path": rel, "reason": "changed while it was archived"})


def _forget_pages(fd: int) -> None:
    """Tell the kernel a backup will not read this again: keep the pipeline's files cached."""
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except (AttributeError, OSError):  # not on every platform or filesystem; only a hint
        pass


def _walk(root: Path, comp: Component, tally: _Tally) -> Iterator[tuple[Path, str, bool]]:
    """(path, archive name, is a folder) under ``root``, sorted, never through a link."""
    for dirpath, dirnames, filenames in os.walk(root):
        folder = Path(dirpath)
        kept = []
        for name in sorted(dirnames):
            path = folder / name
            rel = path.relative_to(root).as_posix()
            if path in comp.exclude:
                tally.excluded.append(rel + "/")
            elif path.is_symlink():
                tally.skip(rel, "symbolic link (not archived)")
            else:
                kept.append(name)
        dirnames[:] = kept
        if folder != root:
            yield folder, folder.relative_to(root).as_posix(), True
        for name in sorted(filenames):
            if is_own_temp(name):
                continue
            path = folder / name
            yield path, path.relative_to(root).as_posix(), False


def _fill(tar: tarfile.TarFile, comp: Component, settle: float, now: float,
          cancel: threading.Event | None) -> _Tally:
    tally = _Tally()
    if comp.root.is_symlink() or not comp.root.is_dir():
        tally.skip(".", "the folder does not exist" if not comp.root.exists()
                   else "not a real folder")
        return tally
    tally.seen(comp.root.stat())
    for path, rel, is_dir in _walk(comp.root, comp, tally):
        if cancel is not None and cancel.is_set():
            raise BackupCancelled()
        if not is_dir:
            _add_file(tar, comp, path, rel, tally, settle, now, cancel)
            continue
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        tally.seen(st)
        info = tarfile.TarInfo(rel)
        info.type, info.mtime, info.mode = tarfile.DIRTYPE, st.st_mtime, stat.S_IMODE(st.st_mode)
        tar.addfile(info)
        tally.entries.append({"path": rel, "type": "dir"})
    return tally


def publish_no_clobber(temp: Path, final: Path) -> None:
    """Give a complete temp file its final name, refusing to replace anything already there."""
    try:
        os.link(temp, final)  # fails with EEXIST instead of overwriting
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        if os.path.lexists(final):  # a filesystem without hard links: check, then rename
            raise FileExistsError(errno.EEXIST, "already exists", str(final)) from None
        os.rename(temp, final)
        return
    os.unlink(temp)


def write_temp(folder: Path, name: str, lines: Iterable[str], mode: int = 0o644) -> Path:
    """A fsynced hidden temp file in ``folder`` holding ``lines``, to be renamed to ``name``."""
    temp = folder / f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())
    return temp


def write_manifest(archive: Path, header: dict[str, Any],
                   entries: Iterable[dict[str, Any]], mode: int = 0o644) -> Path:
    """Write ``<archive>.manifest.jsonl`` atomically: a header line, then one line per member."""
    lines = [json.dumps(header, ensure_ascii=False) + "\n"]
    lines += [json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries]
    final = manifest_path(archive)
    temp = write_temp(archive.parent, final.name, lines, mode)
    try:
        publish_no_clobber(temp, final)
    finally:
        if temp.exists():
            temp.unlink()
    fsync_dir(archive.parent)
    return final


@dataclass(frozen=True)
class ArchiveResult:
    component: str
    archive: Path
    size: int
    files: int
    skipped: int


def backup_component(comp: Component, dest: Path, set_id: str, *, settle: float,
                     cancel: threading.Event | None = None) -> ArchiveResult:
    """Archive one component into ``dest``; the final name appears only once it is complete."""
    final = dest / archive_name(comp.name, set_id)
    temp = dest / f".{final.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            sink = _HashingWriter(raw)
            with tarfile.open(fileobj=sink, mode="w:gz",  # type: ignore[call-overload]
                              compresslevel=COMPRESS_LEVEL, format=tarfile.PAX_FORMAT,
                              copybufsize=CHUNK) as tar:
                tally = _fill(tar, comp, settle, time.time(), cancel)
            raw.flush()
            os.fsync(raw.fileno())
            mode = tally.mode(os.fstat(raw.fileno()).st_gid)
        os.chmod(temp, mode)
        publish_no_clobber(temp, final)
    finally:
        if temp.exists():
            temp.unlink()
    fsync_dir(dest)
    files = [e for e in tally.entries if e["type"] == "file"]
    header = {"format": MANIFEST_FORMAT, "tool": f"thumbgen {__version__}", "id": set_id,
              "component": comp.name, "source": str(comp.root),
              "created": datetime.now().astimezone().isoformat(timespec="seconds"),
              "archive": {"name": final.name, "size": sink.size, "sha256": sink.sha.hexdigest()},
              "files": len(files), "folders": len(tally.entries) - len(files),
              "bytes": sum(e["size"] for e in files), "excluded": tally.excluded,
              "skipped": tally.skipped, "warnings": tally.warnings}
    if comp.settings is not None:
        header["settings"] = comp.settings
    write_manifest(final, header, tally.entries, mode)  # names files: no wider than the archive
    for item in tally.skipped:
        logger.bind(file=item["path"]).info("backup of {} left out {}: {}", comp.name,
                                            item["path"], item["reason"])
    return ArchiveResult(comp.name, final, sink.size, len(files), len(tally.skipped))


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
    taken = {found for name in os.listdir(dest) for found in _ID_IN_NAME.findall(name)}
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
        match = _NAME.match(name)
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
        match = _NAME.match(name)
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


__all__ = ["COMPONENTS", "BackupBusy", "BackupCancelled", "BackupReport", "BackupSet",
           "components", "find_set", "list_sets", "prune", "run_backup", "write_manifest"]
