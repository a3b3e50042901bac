"""Rescans: the source of truth when events are lost (start-up, timer, inotify overflow, shares)."""

from __future__ import annotations

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
    its directory entry (whose ``stat`` a caller may want). Holds one folder's listing at a time.

    Never descends into ignored folders (``_processados``, ``_falhas``, ``.thumbgen``) nor through
    symlinked folders. Links, FIFOs and other odd files are yielded: validation rejects them with a
    reason, which is better than ignoring them silently.
    """
    top = start or inbox
    prefix = len(os.path.join(inbox, ""))  # entry.path[prefix:] is the inbox-relative path
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except (FileNotFoundError, NotADirectoryError):
            continue  # gone since it was listed
        except OSError as exc:  # unreadable, or a share's ESTALE/EIO: scan the rest
            logger.warning("cannot scan {}: {}", folder, exc)
            continue
        for entry in entries:
            if is_ignored_name(entry.name):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                stack.append(Path(entry.path))
                continue
            # sliced, not Path.relative_to: pathlib was most of a 100 000-file scan's time
            yield PurePosixPath(entry.path[prefix:]), entry
