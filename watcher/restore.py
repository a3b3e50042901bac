"""Reading backups back: verify an archive against its manifest, and restore it safely.

Restore never writes outside its target. Every member passes two gates: our own checks (a
relative path without ``..``, a regular file or a folder, listed in the manifest with the same
content) and the standard library's tar ``data`` filter. Files are then written through folder
file descriptors opened with ``O_NOFOLLOW``, so a link planted in the target cannot redirect a
write; each file goes to a hidden temp name, is fsynced and renamed. An existing file is never
replaced without ``force`` (one with the same content counts as already restored).

The temp name is ``.thumbgen-restore.<12 hex>.tmp`` (``is_temp_name``). A file keeps a fresh
mtime until it has its real name, and only then gets the archived one, so a temp that looks
older than an hour is one a killed restore left: ``thumbgen cleanup`` removes it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import stat
import tarfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from loguru import logger

from watcher import backup
from watcher.backup import CHUNK, manifest_path, verified_path
from watcher.config import Settings
from watcher.stages.publish import TEMP_SUFFIX

Entries = dict[str, dict[str, Any]]
TEMP_PREFIX = ".thumbgen-restore."
_TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"[0-9a-f]{12}" + re.escape(TEMP_SUFFIX))


def read_manifest(archive: Path) -> tuple[dict[str, Any], Entries]:
    """(header, member path → entry). Raises ValueError when the manifest is missing or broken."""
    try:
        with manifest_path(archive).open(encoding="utf-8") as fh:
            header = json.loads(fh.readline())
            entries = {}
            for line in fh:
                entry = json.loads(line)
                entries[entry["path"]] = entry
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"manifest of {archive.name} is missing or unreadable: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("archive"), dict):
        raise ValueError(f"manifest of {archive.name} has no header")
    return header, entries


def file_sha256(path: Path | int) -> str:
    """sha256 of a file, by path or by an open descriptor (read from its current offset)."""
    sha = hashlib.sha256()
    with (open(path, "rb", closefd=not isinstance(path, int))) as fh:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
    return sha.hexdigest()


def _check_archive(archive: Path, header: dict[str, Any]) -> str | None:
    digest = file_sha256(archive)
    if digest != header["archive"].get("sha256"):
        return f"{archive.name}: sha256 {digest[:12]}… differs from its manifest"
    return None


# -- verify --------------------------------------------------------------------------------------

def verify_archive(archive: Path) -> list[str]:
    """Problems found (empty when good): the archive's sha256, then every member's.

    Records the outcome beside the archive (``<name>.verified.json``) for ``thumbgen backups``.
    """
    try:
        header, entries = read_manifest(archive)
    except ValueError as exc:
        return [str(exc)]
    problem = _check_archive(archive, header)
    problems = [problem] if problem else _verify_members(archive, entries)
    stamp = {"time": datetime.now().astimezone().isoformat(timespec="seconds"),
             "ok": not problems, "sha256": header["archive"].get("sha256"),
             "size": archive.stat().st_size, "problems": problems[:20]}
    target = verified_path(archive)
    try:
        os.replace(backup.write_temp(archive.parent, target.name, [json.dumps(stamp) + "\n"]),
                   target)
    except OSError as exc:  # a read-only copy of the backups can still be verified
        logger.warning("could not record the verification of {}: {}", archive.name, exc)
    return problems


def _verify_members(archive: Path, entries: Entries) -> list[str]:
    problems, seen = [], set()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                seen.add(member.name)
                entry = entries.get(member.name)
                if entry is None:
                    problems.append(f"{member.name}: in the archive, not in the manifest")
                elif member.isfile():
                    if _member_sha256(tar, member) != entry.get("sha256"):
                        problems.append(f"{member.name}: content differs from the manifest")
                elif not (member.isdir() and entry.get("type") == "dir"):
                    problems.append(f"{member.name}: unexpected member type")
    except (OSError, tarfile.TarError, EOFError) as exc:
        problems.append(f"{archive.name}: unreadable archive: {exc}")
    problems += [f"{path}: in the manifest, missing from the archive"
                 for path in sorted(set(entries) - seen)]
    return problems


def _member_sha256(tar: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    sha = hashlib.sha256()
    source = tar.extractfile(member)
    assert source is not None  # regular files always have a data stream
    while chunk := source.read(CHUNK):
        sha.update(chunk)
    return sha.hexdigest()


# -- restore -------------------------------------------------------------------------------------

def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one restore gives a member while writing it, and nothing else."""
    return _TEMP_NAME.fullmatch(name) is not None


@dataclass
class RestoreReport:
    restored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    folders: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)

    def refuse(self, name: str, reason: str) -> None:
        self.refused.append((name, reason))
        logger.bind(file=name).warning("restore refused {}: {}", name, reason)


class _Refused(Exception):
    """This member is not written; the message says why."""


def _check_member(member: tarfile.TarInfo) -> PurePosixPath | None:
    """Our own gate, before the ``data`` filter: the safe relative path, or None for the root."""
    name = member.name
    if not name or "\x00" in name:
        raise _Refused("empty or malformed name")
    path = PurePosixPath(name)
    if path.is_absolute():
        raise _Refused("absolute path")
    if ".." in path.parts:
        raise _Refused("path with '..'")
    if member.issym() or member.islnk():
        raise _Refused(f"link to {member.linkname!r} (links are never restored)")
    if not (member.isfile() or member.isdir()):
        raise _Refused("device, FIFO or other special file")
    parts = [p for p in path.parts if p != "."]
    return PurePosixPath(*parts) if parts else None


def _open_folder(root_fd: int, parts: tuple[str, ...]) -> int:
    """Open (creating) ``parts`` under ``root_fd`` one level at a time, never through a link."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _Refused(f"{part!r} in the target is a link or not a folder") from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _copy(source: IO[bytes], fd: int) -> str:
    sha = hashlib.sha256()
    while chunk := source.read(CHUNK):
        sha.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view):]
    os.fsync(fd)
    return sha.hexdigest()


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, folder_fd: int, name: str,
                expected: str | None, force: bool) -> str:
    """Write one member into ``folder_fd``: "restored" or "unchanged", or raise _Refused."""
    try:
        existing = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if stat.S_ISDIR(existing.st_mode):
            raise _Refused("a folder of that name is in the way")
        if stat.S_ISREG(existing.st_mode) and existing.st_size == member.size and expected:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=folder_fd)
            try:
                if file_sha256(fd) == expected:
                    return "unchanged"
            finally:
                os.close(fd)
        if not force:
            raise _Refused("a different file exists there (use --force to replace it)")
    temp = f"{TEMP_PREFIX}{secrets.token_hex(6)}{TEMP_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                 dir_fd=folder_fd)
    try:
        try:
            source = tar.extractfile(member)
            assert source is not None
            digest = _copy(source, fd)
            os.fchmod(fd, member.mode & 0o777 if member.mode is not None else 0o644)
            if expected is not None and digest != expected:
                raise _Refused("content differs from the manifest")
            if force:
                # replaces a file, or a link itself: rename never writes through a link
                os.replace(temp, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
            else:
                _link_no_clobber(temp, name, folder_fd)
            # the archived mtime only once the file has its name: cleanup takes an old-looking
            # temp for a killed restore's (the temp it may still see now is a second link)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)
    except FileExistsError:
        raise _Refused("a file appeared there while restoring") from None
    finally:
        try:
            os.unlink(temp, dir_fd=folder_fd)
        except FileNotFoundError:
            pass
    os.fsync(folder_fd)
    return "restored"


def _link_no_clobber(temp: str, name: str, folder_fd: int) -> None:
    try:
        os.link(temp, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)  # EEXIST, never clobbers
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # a filesystem without hard links: check, then rename (a small window, but no link tricks)
        try:
            os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.rename(temp, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
            return
        raise FileExistsError(errno.EEXIST, "exists", name) from None


def restore_archive(archive: Path, target: Path, *, force: bool = False,
                    entries: Entries | None = None) -> RestoreReport:
    """Restore every acceptable member of ``archive`` under ``target``.

    ``entries`` (from the manifest) lists what the archive may hold and each file's sha256;
    anything else is refused. Without it (a hand-made archive) only the path checks apply.
    """
    report = RestoreReport()
    target.mkdir(parents=True, exist_ok=True)
    root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
    links: set[PurePosixPath] = set()  # names of link members: nothing is restored beneath them
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                path = PurePosixPath(member.name)
                if member.issym() or member.islnk():
                    links.add(path)
                # a member's own parents looked up in the set, outermost first: a few lookups per
                # member, not one test per link seen so far (quadratic: 72 s for 4 000 + 4 000)
                through = next((p for p in reversed(path.parents) if p in links), None)
                if through is not None:
                    report.refuse(member.name, f"inside link member {str(through)!r}")
                    continue
                _restore_member(tar, member, root_fd, target, force, entries, report)
    except (OSError, tarfile.TarError, EOFError) as exc:
        report.refuse(archive.name, f"unreadable archive: {exc}")
    finally:
        os.close(root_fd)
    return report


def _restore_member(tar: tarfile.TarFile, member: tarfile.TarInfo, root_fd: int, target: Path,
                    force: bool, entries: Entries | None, report: RestoreReport) -> None:
    try:
        rel = _check_member(member)
        if rel is None:
            return
        checked = tarfile.data_filter(member, str(target))  # the standard library's own gate
        entry = entries.get(member.name) if entries is not None else None
        if entries is not None and (entry is None or entry.get("type") != (
                "dir" if member.isdir() else "file")):
            raise _Refused("not listed in the manifest")
        if member.isdir():
            os.close(_open_folder(root_fd, rel.parts))
            report.folders += 1
            return
        folder_fd = _open_folder(root_fd, rel.parts[:-1])
        try:
            outcome = _write_file(tar, checked, folder_fd, rel.name,
                                  entry.get("sha256") if entry else None, force)
        finally:
            os.close(folder_fd)
        (report.restored if outcome == "restored" else report.unchanged).append(str(rel))
    except _Refused as exc:
        report.refuse(member.name, str(exc))
    except tarfile.FilterError as exc:
        report.refuse(member.name, f"refused by the tar data filter: {exc}")
    except OSError as exc:
        report.refuse(member.name, f"could not write: {exc.strerror or exc}")


def restore_component(archive: Path, target: Path, *, force: bool = False) -> RestoreReport:
    """Check ``archive`` against its manifest, then restore it under ``target``."""
    try:
        header, entries = read_manifest(archive)
    except ValueError as exc:
        report = RestoreReport()
        report.refuse(archive.name, str(exc))
        return report
    problem = _check_archive(archive, header)
    if problem:
        report = RestoreReport()
        report.refuse(archive.name, problem)
        return report
    return restore_archive(archive, target, force=force, entries=entries)


# -- a whole set ---------------------------------------------------------------------------------

def _pick(settings: Settings, set_id: str, names: list[str]) -> tuple[str, dict[str, Path]]:
    """(resolved set ID, component → archive); LookupError naming what is missing."""
    found = backup.find_set(settings.backup_path, set_id)
    if found is None:
        raise LookupError(f"no backup set {set_id!r} in {settings.backup_path}")
    wanted = names or sorted(found.archives, key=backup.COMPONENTS.index)
    missing = [n for n in wanted if n not in found.archives]
    if missing:
        raise LookupError(f"backup set {found.set_id} has no {', '.join(missing)} archive")
    return found.set_id, {n: found.archives[n].path for n in wanted}


def verify_set(settings: Settings, set_id: str,
               names: list[str]) -> tuple[str, dict[str, list[str]]]:
    """(set ID, component → problems) for every archive of the set, or those named."""
    resolved, archives = _pick(settings, set_id, names)
    return resolved, {name: verify_archive(path) for name, path in archives.items()}


def restore_set(settings: Settings, set_id: str, names: list[str], *, to: Path | None = None,
                force: bool = False) -> tuple[str, dict[str, RestoreReport]]:
    """Restore a set's components into their own folders, or into ``to/<component>``."""
    resolved, archives = _pick(settings, set_id, names)
    roots = backup.components(settings)
    reports = {}
    for name, path in archives.items():
        target = (to / name) if to is not None else roots[name].root
        logger.info("restoring {} into {}", path.name, target)
        reports[name] = restore_component(path, target, force=force)
    return resolved, reports


__all__ = ["RestoreReport", "file_sha256", "is_temp_name", "read_manifest", "restore_archive",
           "restore_component", "restore_set", "verify_archive", "verify_set"]
