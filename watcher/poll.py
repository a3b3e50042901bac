"""Polling for network shares: a folder is listed again only when its mtime changed.

Where inotify hears nothing (NFS, SMB, FUSE: see ``mounts``), ``FolderPoller.poll`` runs every
``POLL_INTERVAL``. It keeps one number per folder (its mtime), never one per file, and costs one
``stat`` per folder when nothing changed: ~1 000 folders in a few milliseconds. A folder whose
mtime moved is listed and every candidate in it suggested to the settle table, which ignores the
ones it already holds.

What this relies on, and where it is weaker:

- Creating, renaming in or removing an entry changes its folder's mtime, on NFS and SMB too
  (POSIX; the server sets it). Overwriting a file in place does not: such a file is seen by the
  periodic full rescan (``RESCAN_INTERVAL``), the safety net for everything polling misses.
- mtime granularity: some servers keep whole seconds (ext3, HFS+) or two (FAT). Two changes in
  one granule look like one, so a folder whose mtime moved is listed once more at the next poll,
  which catches what landed after the first listing within the same granule (as long as
  ``POLL_INTERVAL`` is not shorter than the granule).
- NFS attribute caching: the client may answer ``stat`` on a folder from its cache for
  ``acdirmin``..``acdirmax`` seconds (30..60 by default), so a new file can take that long to
  show. Mount with ``acdirmin=1,acdirmax=2`` (or ``actimeo=2``) for ``POLL_INTERVAL``-sized
  latency; ``noac`` works too but costs every operation a round trip.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from loguru import logger

from watcher.inbox import is_ignored_name

# folder path → (mtime_ns at the last listing, list it again at the next poll)
_Seen = dict[str, tuple[int, bool]]


class FolderPoller:
    """Finds new candidates under ``inbox`` by folder mtimes; not thread-safe (one caller)."""

    def __init__(self, inbox: Path, on_file: Callable[[PurePosixPath], None]) -> None:
        self.inbox = inbox
        self.on_file = on_file
        self._seen: _Seen = {}
        self.listed = 0  # folders listed by the last poll

    def __len__(self) -> int:
        return len(self._seen)

    def prime(self) -> None:
        """Note every folder's mtime without suggesting anything (the start-up rescan does)."""
        self._seen.clear()
        self._walk(str(self.inbox), suggest=False, changed=False)

    def poll(self) -> int:
        """Look at every known folder; list those whose mtime moved. Returns folders listed."""
        listed = 0
        for folder, (mtime, again) in list(self._seen.items()):
            try:
                now = os.stat(folder).st_mtime_ns
            except OSError:  # gone (its parent's listing drops it), or a share's hiccup
                if folder != str(self.inbox):
                    self._seen.pop(folder, None)
                continue
            if now != mtime or again:
                listed += self._walk(folder, suggest=True, changed=now != mtime)
        self.listed = listed
        return listed

    def _walk(self, top: str, suggest: bool, changed: bool = True) -> int:
        """List ``top`` and any folder under it not seen before; returns folders listed."""
        listed, stack = 0, [(top, changed)]
        while stack:
            folder, moved = stack.pop()
            try:
                mtime = os.stat(folder).st_mtime_ns
                with os.scandir(folder) as entries:
                    found = [(e.name, e.path, e.is_dir(follow_symlinks=False)) for e in entries
                             if not is_ignored_name(e.name)]
            except OSError as exc:
                if not isinstance(exc, FileNotFoundError | NotADirectoryError):
                    logger.debug("cannot poll {}: {}", folder, exc)
                self._seen.pop(folder, None)
                continue
            listed += 1
            self._seen[folder] = (mtime, moved)  # moved: list it once more next time
            for name, path, is_dir in found:
                if is_dir:
                    if path not in self._seen:  # new since the last listing, unless priming
                        stack.append((path, changed))
                elif suggest:
                    rel = os.path.relpath(path, self.inbox)
                    self.on_file(PurePosixPath(rel.replace(os.sep, "/")))
        return listed
