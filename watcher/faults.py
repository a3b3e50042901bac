"""Faults of the daemon's own setup: what would fail every photo alike.

The model cannot load; an output, ``_processados/``, ``_falhas/`` or state folder cannot be
written (permissions, an immutable folder, a read-only filesystem). None of these says anything
about the photo in hand, so no photo is rejected for them: the photo goes back to the inbox, the
daemon stops taking new ones, ``/readyz`` answers 503 naming the cause, ``/health`` says what to
fix, and the log says it once. Every rescan retries each fault's own check; once it passes, the
fault is cleared (logged once too) and the photos that waited are taken again.

A fault is keyed by its cause (``model``, ``folder:<path>``), so a second photo hitting the same
cause while the first is being reported adds nothing.

A *local* fault holds only the photos of one folder of the inbox: a shop folder the daemon's user
cannot write, or another filesystem mounted inside the inbox (a claim is a rename, which cannot
cross filesystems). Its photos stay where they are and are tried again at each rescan; the other
shops go on, readiness stands, and ``/health`` is degraded naming the folder.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from watcher import mounts

# Errors of writing into one of our own folders that every photo would hit alike. ENOSPC and
# friends are not here: a full disk is handled as before (the photo waits, readiness says so).
SETUP_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})

# A check answers None when the cause is gone, else what is still wrong, in words.
Check = Callable[[], "str | None"]


@dataclass(frozen=True)
class Fault:
    key: str
    problem: str   # what is wrong, for the operator
    fix: str       # what to do about it
    since: float   # time.time() it was first seen
    check: Check
    folder: Path | None = None  # set for a local fault: only the photos of this folder wait

    def describe(self) -> str:
        return f"{self.problem}; {self.fix}"


def probe_write(folder: Path) -> str | None:
    """None if ``folder`` takes a write, else what is wrong, in words.

    A real create/write/unlink: permission bits do not stop root, a read-only mount, a full disk,
    an immutable folder or a folder replaced by a file do. The probe is named like thumbgen's temp
    files (hidden, ``.tmp``): readers of the inbox and the output ignore it, and cleanup sweeps
    leftovers.
    """
    if not folder.exists():
        return "missing"
    if not folder.is_dir():
        return "not a folder"
    probe = folder / f".thumbgen-probe-{os.getpid()}-{threading.get_ident()}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"not writable ({exc.strerror or exc})"
    return None


def is_setup_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in SETUP_ERRNOS


def folder_of(exc: OSError, root: Path) -> Path:
    """The folder whose write failed: the parent of the path the error names, within ``root``
    (a nested folder may be the one that is locked, while ``root`` itself takes writes)."""
    name = exc.filename if isinstance(exc.filename, str | bytes) else None
    if not name:
        return root
    folder = Path(os.fsdecode(name)).parent
    try:
        folder.relative_to(root)
    except ValueError:
        return root
    return folder


class Faults:
    """The set of setup faults now in force; safe to use from every thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, Fault] = {}

    def report(self, key: str, problem: str, fix: str, check: Check) -> bool:
        """Record a fault; logs it only the first time. True if it is new."""
        with self._lock:
            if key in self._faults:
                return False
            self._faults[key] = Fault(key, problem, fix, time.time(), check)
        logger.bind(fault=key).error("photos wait in the inbox until this is fixed: {}; {}",
                                     problem, fix)
        return True

    def local(self, folder: Path, problem: str, fix: str, check: Check) -> bool:
        """Record a fault that holds only the photos of ``folder``; logs it only the first time."""
        key = f"local:{folder}"
        with self._lock:
            if key in self._faults:
                return False
            self._faults[key] = Fault(key, problem, fix, time.time(), check, folder)
        logger.bind(fault=key).error("photos in {} wait there until this is fixed (the other "
                                     "folders go on): {}; {}", folder, problem, fix)
        return True

    def folder(self, folder: Path, role: str, why: str) -> bool:
        """Report that ``folder`` (one of ours, in ``role``) cannot be written, and ``why``."""
        return self.report(
            f"folder:{folder}", f"the {role} folder {folder} cannot be written: {why}",
            f"make {folder} writable by the daemon's user (check its permissions, `lsattr` for "
            "the immutable flag, and whether the filesystem is mounted read-only)",
            lambda: probe_write(folder))

    def active(self) -> list[Fault]:
        """The faults that hold every photo."""
        return [fault for fault in self._all() if fault.folder is None]

    def held(self) -> list[Fault]:
        """The local faults: each holds the photos of one folder of the inbox."""
        return [fault for fault in self._all() if fault.folder is not None]

    def _all(self) -> list[Fault]:
        with self._lock:
            return sorted(self._faults.values(), key=lambda fault: fault.since)

    def __bool__(self) -> bool:
        """True while a fault holds every photo (local faults do not count)."""
        with self._lock:
            return any(fault.folder is None for fault in self._faults.values())

    def recheck(self) -> int:
        """Run each fault's check; clear those that pass. Returns how many remain."""
        for fault in self._all():
            try:
                still = fault.check()
            except Exception as exc:  # a check is a boundary: whatever it raises, still broken
                still = f"{type(exc).__name__}: {exc}"
            if still is None:
                with self._lock:
                    self._faults.pop(fault.key, None)
                logger.bind(fault=fault.key).info(
                    "fixed after {:.0f} s: {}; photos are taken again",
                    time.time() - fault.since, fault.problem)
        with self._lock:
            return len(self._faults)


# -- why a claim failed ----------------------------------------------------------------------------

def claim_failed(faults: Faults, exc: OSError, src: Path, claim_dir: Path, inbox: Path) -> bool:
    """Report why moving the input ``src`` into ``claim_dir`` failed, as the fault it is.

    Decided by looking, not by the error's text: a folder that does not take a write is the one
    at fault (the input's own folder first: then only its photos wait); EXDEV means the input
    lies on another filesystem mounted inside the inbox. False when it is none of these (the
    caller raises it as the bug it is).
    """
    if exc.errno == errno.EXDEV:
        _crossed(faults, src.parent, claim_dir, inbox)
        return True
    if not is_setup_error(exc):
        return False
    folder, why = src.parent, exc.strerror or str(exc)
    problem = probe_write(folder)
    if problem is not None:
        faults.local(folder, f"the daemon's user ({_who()}) cannot write the "
                     f"{_role(folder, inbox)} {folder} ({_owner(folder)}): {problem}",
                     "give the daemon's user write permission, e.g. `chown -R "
                     f"{os.geteuid()}:{os.getegid()} {folder}` (or a shared group with g+rwx); "
                     f"check `lsattr -d {folder}` for the immutable flag and whether it is "
                     "mounted read-only",
                     lambda: probe_write(folder))
        return True
    target = _nearest_existing(claim_dir)
    if probe_write(target) is not None:  # the claim folder itself: every photo would fail
        faults.folder(target, "state", why)
        return True
    # both folders take writes: it is this file that cannot be moved out of its folder
    faults.local(folder, f"{src} cannot be moved out of {folder}: {why}",
                 "in a folder with the sticky bit only a file's owner may move it; check the "
                 f"file's owner, and `lsattr {src}` for the immutable or append-only flag",
                 lambda: None if not os.path.lexists(src) else "the file is still there")
    return True


def _crossed(faults: Faults, folder: Path, claim_dir: Path, inbox: Path) -> None:
    """EXDEV: the input's folder and the claim folder are on different mounts."""
    real = Path(os.path.realpath(inbox))
    mount = mounts.mount_of(folder)
    if mount is not None and mount.point != real and mount.point.is_relative_to(real):
        mounted_inside(faults, mount, inbox)
        return
    if mount is not None:  # the input is on the inbox's own mount: the claim folder is elsewhere
        state = _nearest_existing(claim_dir)
        faults.report(f"filesystem:{state}", f"the state folder {state} is on another filesystem "
                      f"than the inbox {inbox}: claims are renames, which cannot cross filesystems",
                      f"mount nothing at or inside {state} (it lives in the inbox, on the inbox's "
                      "own filesystem)", lambda: _apart(state, inbox))
        return
    faults.local(folder, f"{folder} is on another filesystem than the claim folder: files there "
                 "cannot be moved atomically, so its photos stay there untouched",
                 "mount shares at the inbox itself or at BASE_PATH, never inside the inbox",
                 lambda: None)  # mountinfo unreadable: tried again at the next rescan


def mounted_inside(faults: Faults, mount: mounts.Mount, inbox: Path) -> bool:
    """Hold the photos of ``mount``, a filesystem mounted inside the inbox: a claim is a rename,
    which cannot leave it. Said at start-up for each such mount, and when a claim meets one."""
    shown = inbox / mount.point.relative_to(Path(os.path.realpath(inbox)))
    point = mount.point
    return faults.local(shown, f"{shown} is another filesystem ({mount.fstype}) mounted inside "
                        "the inbox: files there cannot be moved atomically into the claim "
                        "folder, so its photos stay there untouched",
                        f"mount the share at the inbox itself ({inbox}) or at BASE_PATH instead "
                        "of inside it", lambda: _still_mounted(point))


def _still_mounted(point: Path) -> str | None:
    mount = mounts.mount_of(point)
    return f"still mounted ({mount.fstype})" if mount is not None and mount.point == point \
        else None


def _apart(state: Path, inbox: Path) -> str | None:
    return None if mounts.mount_of(state) == mounts.mount_of(inbox) else "still apart"


def _nearest_existing(path: Path) -> Path:
    """``path``, or the nearest of its parents that exists (a claim folder not made yet)."""
    return next((p for p in (path, *path.parents) if p.exists()), path)


def _role(folder: Path, inbox: Path) -> str:
    return "inbox folder" if folder == inbox else "shop folder"


def _who() -> str:
    return f"uid {os.geteuid()}"


def _owner(folder: Path) -> str:
    try:
        st = folder.stat()
    except OSError as exc:
        return exc.strerror or str(exc)
    return f"owner uid {st.st_uid}, mode {st.st_mode & 0o7777:o}"
