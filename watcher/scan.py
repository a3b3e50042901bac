"""Rescans: the source of truth when events are lost (start-up, timer, inotify overflow, shares)."""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from loguru import logger

from watcher.inbox import is_ignored_name


def scan(inbox: Path, start: Path | None = None) -> Iterator[PurePosixPath]:
    """Every candidate input under ``start`` (default: the whole inbox), inbox-relative."""
    for rel, _ in scan_entries(inbox, start):
        yield rel


def scan_entries(inbox: Path,
                 start: Path | None = None) -> Iterator[tuple[PurePosixPath, os.DirEntry[str]]]:
    """Every candidate input under ``start`` (default: the whole inbox), inbox-relative, with
    its directory entry (whose ``stat`` a caller may want). Holds one entry at a time.

    Never descends into ignored folders (``_processados``, ``_falhas``, ``.thumbgen``) nor through
    symlinked folders. Links, FIFOs and other odd files are yielded: validation rejects them with a
    reason, which is better than ignoring them silently.
    """
    for rel, entry in _entries(inbox, start or inbox):
        yield PurePosixPath(rel), entry


def lane_folders(inbox: Path) -> list[str]:
    """The inbox's shop folders (``inbox.lane_of``), by name; the top level is lane ``""``."""
    try:
        with os.scandir(inbox) as listing:
            return sorted(e.name for e in listing
                          if not is_ignored_name(e.name) and _is_dir(e))
    except OSError as exc:
        logger.warning("cannot scan {}: {}", inbox, exc)
        return []


def oldest_in_lane(inbox: Path, lane: str,
                   count: int) -> tuple[list[tuple[int, str, int]], int]:
    """The ``count`` oldest inputs of shop folder ``lane`` ("": the files at the top level) as
    (mtime_ns, rel, size), oldest first by (mtime, name), and how many inputs it holds.

    One ``lstat`` per input (its directory entry's), and never more than ``count`` of them
    kept: a shop with 100 000 waiting costs the memory of ``count``.
    """
    found = 0

    def looks() -> Iterator[tuple[int, str, int]]:
        nonlocal found
        top = inbox / lane if lane else inbox
        for rel, entry in _entries(inbox, top, recursive=bool(lane)):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone since it was listed
            found += 1
            yield st.st_mtime_ns, rel, st.st_size

    oldest = heapq.nsmallest(count, looks())
    return oldest, found


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _entries(inbox: Path, top: Path,
             recursive: bool = True) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """``scan_entries`` with inbox-relative paths as str; ``recursive`` False: ``top`` alone.

    Streams each listing: a folder of 100 000 files never holds 100 000 directory entries (each
    with its cached ``lstat``) at once.
    """
    prefix = len(os.path.join(inbox, ""))  # entry.path[prefix:] is the inbox-relative path
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            listing = os.scandir(folder)
        except (FileNotFoundError, NotADirectoryError):
            continue  # gone since it was listed
        except OSError as exc:  # unreadable, or a share's ESTALE/EIO: scan the rest
            logger.warning("cannot scan {}: {}", folder, exc)
            continue
        with listing:
            for entry in _listed(listing, folder):
                if is_ignored_name(entry.name):
                    continue
                if _is_dir(entry):
                    if recursive:
                        stack.append(Path(entry.path))
                    continue
                # sliced, not Path.relative_to: pathlib was most of a 100 000-file scan's time
                yield entry.path[prefix:], entry


def _listed(listing: Iterator[os.DirEntry[str]], folder: Path) -> Iterator[os.DirEntry[str]]:
    """The entries of an open listing; one that fails midway (a share's EIO) ends with a
    warning, and the scan goes on with the other folders."""
    while True:
        try:
            entry = next(listing)
        except StopIteration:
            return
        except OSError as exc:
            logger.warning("cannot scan {}: {}", folder, exc)
            return
        yield entry
