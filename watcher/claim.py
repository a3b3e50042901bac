"""Claims: who owns an input while it is processed.

A claim is an atomic ``rename`` of the input from the inbox into
``.thumbgen/claimed/<worker-id>/<rel>``. Only one of several daemons on a shared folder can win the
rename, so each file is processed exactly once. A claim folder whose owner is gone is returned to
the inbox: on the same host when its pid is dead, on any host when its heartbeat is older than the
lease (``CLAIM_LEASE_SECONDS``).

A daemon that was only frozen (SIGSTOP, a hung NFS mount, a clock jump) comes back still holding
jobs whose files another daemon has taken back. Its results must not be published: ``owns()`` is
the fence, checked as the last step before each atomic publish. It compares the claimed file's
identity (device, inode and ctime, which every rename changes) with the one taken at the claim, so
a file that was moved back to the inbox and claimed again, by anyone, no longer counts as ours.
What it cannot close is the gap between the check and the rename right after it (see README).
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from loguru import logger

HEARTBEAT_NAME = ".heartbeat"
# A claim folder whose heartbeat is older than this belongs to a daemon that is gone (the default
# of CLAIM_LEASE_SECONDS).
STALE_AFTER_SECONDS = 300.0
# What identifies one claim of a file: (st_dev, st_ino, st_ctime_ns). A rename changes ctime.
ClaimId = tuple[int, int, int]
_HOST_PID = re.compile(r"^(?P<host>.+)-(?P<pid>\d+)$")


def fsync_dir(path: Path) -> None:
    """Make a rename or create in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def free_name(target: Path) -> Path:
    """``target`` if nothing is there, else ``stem (2).ext``, ``stem (3).ext``…: never overwrite."""
    if not os.path.lexists(target):
        return target
    for n in range(2, 10_000):
        candidate = target.with_name(f"{target.stem} ({n}){target.suffix}")
        if not os.path.lexists(candidate):
            return candidate
    return target.with_name(f"{target.stem} ({time.time_ns()}){target.suffix}")


def _load_renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a libc without it (glibc < 2.28)
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def rename_no_replace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; FileExistsError instead of replacing whatever is at ``dst``.

    Atomic where the kernel and filesystem know RENAME_NOREPLACE (ext4, xfs, btrfs, tmpfs); on
    the others (NFS, SMB) a check then a rename, which a file landing in between can still lose
    to. A plain rename replaces silently, and the inbox is written by people at any moment.
    """
    if _renameat2 is not None:
        if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                      _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def _remove_empty(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``top`` while they are empty."""
    while folder != top and folder.is_relative_to(top):
        try:
            folder.rmdir()
        except OSError:  # not empty (another claim is using it), or gone: leave the rest
            return
        folder = folder.parent


def move_no_clobber(src: Path, dst: Path) -> Path:
    """Rename ``src`` to ``dst`` (or a free variant of it), creating folders; returns where it went."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        target = free_name(dst)
        try:
            rename_no_replace(src, target)
            return target
        except FileExistsError:  # something landed on the free name meanwhile: take the next
            continue
    raise FileExistsError(errno.EEXIST, "no free name", str(dst))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Claims:
    def __init__(self, inbox: Path, state: Path, worker_id: str,
                 lease: float = STALE_AFTER_SECONDS) -> None:
        self.inbox = inbox
        self.root = state / "claimed"
        self.worker_id = worker_id
        self.mine = self.root / worker_id
        self.lease = lease

    @property
    def heartbeat_interval(self) -> float:
        """How often the owner must beat: well inside the lease, so one late beat is no loss."""
        return min(30.0, self.lease / 4)

    def setup(self) -> None:
        self.mine.mkdir(parents=True, exist_ok=True)
        self.heartbeat()

    def heartbeat(self) -> None:
        """Tell other daemons this claim folder has a live owner."""
        beat = self.mine / HEARTBEAT_NAME
        try:
            beat.touch()
        except FileNotFoundError:
            self.mine.mkdir(parents=True, exist_ok=True)
            beat.touch()

    def claim(self, rel: PurePosixPath) -> Path | None:
        """Move the input into our claim folder; None if another daemon won or it vanished."""
        src = self.inbox / rel
        dst = self.mine / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(dst):
            # an earlier claim of ours that never finished (its stage failed): never replace it
            dst = free_name(dst)
        try:
            rename_no_replace(src, dst)
        except FileNotFoundError:
            # On NFS a lost reply can make a successful rename report ENOENT: check our own folder
            # (dst was free before the rename, so whatever is there now is this file).
            return dst if os.path.lexists(dst) and not os.path.lexists(src) else None
        except FileExistsError:  # pragma: no cover - only our own threads write this folder
            return None
        except OSError:  # the caller says why (faults.claim_failed); no empty folders are left
            _remove_empty(dst.parent, self.mine)
            raise
        return dst

    @staticmethod
    def identity(claimed: Path) -> ClaimId | None:
        """The claim's identity right after ``claim()``; None if the file is already gone."""
        try:
            st = os.lstat(claimed)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino, st.st_ctime_ns)

    def owns(self, claimed: Path, claim_id: ClaimId | None) -> bool:
        """The fence: is the file we claimed still where we put it, untouched by any rename?

        False once another daemon took it back (our heartbeat went stale while we were frozen or
        cut off), or a forced shutdown released it: our result for it must then be dropped.
        """
        return claim_id is not None and self.identity(claimed) == claim_id

    def release(self, claimed: Path, rel: PurePosixPath) -> Path:
        """Put a claimed file back in the inbox (to be processed later). Never overwrites."""
        return move_no_clobber(claimed, self.inbox / rel)

    def close(self) -> bool:
        """At a clean stop: remove our claim folder when it holds no claim (a folder with one
        keeps its heartbeat, and the next start returns what is in it). True if removed."""
        if not self.mine.is_dir() or any(self._claimed_files(self.mine)):
            return False
        _remove_empty_tree(self.mine)
        return not self.mine.exists()

    def _claimed_files(self, folder: Path) -> Iterator[Path]:
        for dirpath, dirnames, filenames in os.walk(folder):
            # a claimed link to a folder is an input like any other: moved back, never followed
            links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
            dirnames[:] = [d for d in dirnames if d not in links]
            for name in filenames + links:
                if dirpath == str(folder) and name == HEARTBEAT_NAME:
                    continue
                yield Path(dirpath) / name

    def _owner_gone(self, folder: Path, now: float) -> bool:
        if folder.name == self.worker_id:
            return True  # our own leftovers from an earlier life with the same id
        match = _HOST_PID.match(folder.name)
        if match and match.group("host") == socket.gethostname():
            if not _pid_alive(int(match.group("pid"))):
                return True
            # the pid is alive, but pids are reused (containers restart with small pids): a
            # daemon that has not beaten its heart for so long is gone, whatever runs there now
        try:
            beat = (folder / HEARTBEAT_NAME).stat().st_mtime
        except FileNotFoundError:
            beat = folder.stat().st_mtime
        return now - beat > self.lease

    def recover(self, include_mine: bool = True) -> int:
        """Return claims of gone owners to the inbox; returns how many files went back."""
        if not self.root.is_dir():
            return 0
        returned = 0
        now = time.time()
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or folder.is_symlink():
                continue
            if folder.name == self.worker_id and not include_mine:
                continue
            try:
                if not self._owner_gone(folder, now):
                    continue
            except OSError:
                continue
            for path in list(self._claimed_files(folder)):
                rel = PurePosixPath(path.relative_to(folder).as_posix())
                try:
                    where = self.release(path, rel)
                except OSError as exc:
                    logger.warning("could not return claim {} of {}: {}", rel, folder.name, exc)
                    continue
                returned += 1
                logger.info("returned claim of {} to the inbox as {}", folder.name,
                            where.relative_to(self.inbox))
            if folder.name != self.worker_id:
                _remove_empty_tree(folder)
        return returned


def _remove_empty_tree(folder: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            if name == HEARTBEAT_NAME:
                try:
                    os.unlink(os.path.join(dirpath, name))
                except OSError:
                    pass
        try:
            os.rmdir(dirpath)
        except OSError:
            pass
