"""One component written as one archive: a hidden temp file, fsynced and renamed to its final
name, then its manifest of sha256 sums the same way (the commit mark)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
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
from watcher.backup.names import (CHUNK, COMPRESS_LEVEL, MANIFEST_FORMAT, BackupCancelled,
                                  Component, archive_name, is_own_temp, manifest_path)
from watcher.claim import fsync_dir
from watcher.stages.publish import TEMP_SUFFIX


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
