"""Faults of the daemon's own setup: what would fail every photo alike.

The model cannot load; an output, ``_processados/``, ``_falhas/`` or state folder cannot be
written (permissions, an immutable folder, a read-only filesystem). None of these says anything
about the photo in hand, so no photo is rejected for them: the photo goes back to the inbox, the
daemon stops taking new ones, ``/readyz`` answers 503 naming the cause, ``/health`` says what to
fix, and the log says it once. Every rescan retries each fault's own check; once it passes, the
fault is cleared (logged once too) and the photos that waited are taken again.

A fault is keyed by its cause (``model``, ``folder:<path>``), so a second photo hitting the same
cause while the first is being reported adds nothing.
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

    def folder(self, folder: Path, role: str, why: str) -> bool:
        """Report that ``folder`` (one of ours, in ``role``) cannot be written, and ``why``."""
        return self.report(
            f"folder:{folder}", f"the {role} folder {folder} cannot be written: {why}",
            f"make {folder} writable by the daemon's user (check its permissions, `lsattr` for "
            "the immutable flag, and whether the filesystem is mounted read-only)",
            lambda: probe_write(folder))

    def active(self) -> list[Fault]:
        with self._lock:
            return sorted(self._faults.values(), key=lambda fault: fault.since)

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._faults)

    def recheck(self) -> int:
        """Run each fault's check; clear those that pass. Returns how many remain."""
        for fault in self.active():
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
