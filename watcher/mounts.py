"""Which filesystem a folder lives on, and whether inotify can be trusted there.

inotify reports only what the local kernel does. On a network share (NFS, SMB/CIFS, Ceph,
GlusterFS, 9p, virtiofs…) or a FUSE filesystem, a file written by another host (or, for FUSE,
through whatever backs the mount) raises no event here: the daemon must poll. ``os.statvfs`` has
no filesystem type, so it is read from ``/proc/self/mountinfo``: the mount whose mount point is
the longest prefix of the folder's real path.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")

# Types where another host's (or the backing store's) writes raise no inotify event here.
NETWORK_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "virtiofs", "fuseblk",
    "lustre", "gpfs", "afs", "ocfs2", "gfs2", "beegfs", "davfs", "ncpfs", "coda", "vboxsf",
    "vmhgfs",
})


@dataclass(frozen=True)
class Mount:
    point: Path
    fstype: str  # as in mountinfo: "nfs4", "fuse.bindfs", "fuseblk", "ext4"…
    source: str

    @property
    def needs_polling(self) -> bool:
        """True where inotify misses writes made elsewhere: network shares and every FUSE."""
        return (self.fstype in NETWORK_TYPES or self.fstype == "fuse"
                or self.fstype.startswith("fuse."))


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse(text: str) -> list[Mount]:
    """The mounts of a ``mountinfo`` text (proc(5): fields, then " - ", type, source)."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or not tail:
            continue
        mounts.append(Mount(Path(_unescape(fields[4])), tail[0],
                            _unescape(tail[1]) if len(tail) > 1 else ""))
    return mounts


def mount_of(folder: Path, mountinfo: Path = MOUNTINFO) -> Mount | None:
    """The mount ``folder`` lives on (its nearest existing ancestor's, if it is not there yet),
    or None where mountinfo cannot be read (not Linux)."""
    try:
        mounts = parse(mountinfo.read_text(errors="replace"))
    except OSError:
        return None
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
    return longest_prefix(mounts, Path(os.path.realpath(existing)))


def longest_prefix(mounts: list[Mount], real: Path) -> Mount | None:
    """The mount whose mount point is the longest parent of the real path ``real``."""
    best: Mount | None = None
    for mount in mounts:  # the last of equal mount points is the one on top
        if real.is_relative_to(mount.point) and (
                best is None or len(mount.point.parts) >= len(best.point.parts)):
            best = mount
    return best


def inside(folder: Path, mountinfo: Path = MOUNTINFO) -> list[Mount]:
    """The mounts whose mount point lies inside ``folder`` (not ``folder`` itself): a file there
    cannot be renamed out of them (EXDEV), so the inbox cannot claim it. Empty where mountinfo
    cannot be read."""
    try:
        mounts = parse(mountinfo.read_text(errors="replace"))
    except OSError:
        return []
    real = Path(os.path.realpath(folder))
    seen: dict[Path, Mount] = {}
    for mount in mounts:  # the last of equal mount points is the one on top
        if mount.point != real and mount.point.is_relative_to(real):
            seen[mount.point] = mount
    return sorted(seen.values(), key=lambda mount: mount.point)


@dataclass(frozen=True)
class WatchChoice:
    mode: str  # "native" or "polling"
    why: str  # for the log, `thumbgen config` and `diagnose`


def choose(setting: str, folder: Path, mountinfo: Path = MOUNTINFO) -> WatchChoice:
    """How ``WATCH_MODE`` (auto, native, polling) watches ``folder``, and why."""
    if setting != "auto":
        return WatchChoice(setting, f"WATCH_MODE={setting}")
    mount = mount_of(folder, mountinfo)
    if mount is None:
        return WatchChoice("native", "auto: filesystem type unknown")
    where = f"filesystem {mount.fstype} mounted at {mount.point}"
    if mount.needs_polling:
        return WatchChoice("polling", f"auto: {where}, where inotify misses writes made "
                           "by other hosts")
    return WatchChoice("native", f"auto: {where}")
