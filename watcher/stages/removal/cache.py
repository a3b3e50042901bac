"""Cut-outs cached on disk by content hash, so a re-dropped photo or a re-render skips the remote.

Entries are small ``L`` PNG masks under ``produtos/.thumbgen/cache/<aa>/<key>.png``. Writes are
atomic (temp file, fsync, rename), so several daemons on one shared folder can read and write
the same cache; an entry older than the TTL is a miss and is removed; when the cache grows past
its size bound the oldest entries go first. A cache problem is never a file's problem: every
disk or decode error is logged and read as a miss.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from loguru import logger
from PIL import Image, UnidentifiedImageError

_SUFFIX = ".png"


def content_key(image: Image.Image, *scope: str) -> str:
    """A hex digest of the pixels (with mode and size) and of ``scope`` (backend, endpoint)."""
    digest = hashlib.blake2b(digest_size=20)
    for part in scope:
        digest.update(part.encode() + b"\0")
    digest.update(f"{image.mode} {image.width}x{image.height}\0".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


class MaskCache:
    """A bounded, expiring folder of masks. Safe to use from several threads and processes."""

    def __init__(self, folder: Path, ttl: float, max_bytes: int = 256 * 1024**2,
                 clock: Callable[[], float] = time.time) -> None:
        self.folder = Path(folder)
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._size: int | None = None  # bytes on disk, counted on first write

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}{_SUFFIX}"

    def get(self, key: str, size: tuple[int, int]) -> Image.Image | None:
        """The cached mask for ``key`` if it is fresh and of ``size``, else None."""
        path = self._path(key)
        try:
            age = self._clock() - path.stat().st_mtime
            if age > self.ttl:
                self._discard(path)
                return None
            with Image.open(path, formats=["PNG"]) as im:
                im.load()
                mask = im if im.mode == "L" else im.convert("L")
        except FileNotFoundError:
            return None
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
            logger.bind(stage="remove").warning("unreadable cache entry {} dropped: {}", path, exc)
            self._discard(path)
            return None
        if mask.size != size:  # a hash collision or a damaged entry: never use it
            self._discard(path)
            return None
        return mask

    def put(self, key: str, mask: Image.Image) -> None:
        """Store ``mask`` atomically; evict the oldest entries when over the size bound."""
        path = self._path(key)
        tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                mask.save(fh, format="PNG", compress_level=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            written = path.stat().st_size
        except OSError as exc:
            logger.bind(stage="remove").warning("could not write cache entry {}: {}", path, exc)
            tmp.unlink(missing_ok=True)
            return
        with self._lock:
            if self._size is None:
                self._size = self._measure()
            else:
                self._size += written
            if self._size > self.max_bytes:
                self._size = self._evict(int(self.max_bytes * 0.9))

    def purge_expired(self) -> int:
        """Remove entries older than the TTL (for the cleanup job); returns how many."""
        now, removed = self._clock(), 0
        for path, st in self._entries():
            if now - st.st_mtime > self.ttl and self._discard(path):
                removed += 1
        with self._lock:
            self._size = None
        return removed

    def _entries(self) -> list[tuple[Path, os.stat_result]]:
        found = []
        for path in self.folder.glob(f"??/*{_SUFFIX}"):
            try:
                found.append((path, path.stat()))
            except FileNotFoundError:  # another daemon evicted it meanwhile
                continue
        return found

    def _measure(self) -> int:
        return sum(st.st_size for _, st in self._entries())

    def _evict(self, target: int) -> int:
        """Remove oldest entries until the total is at most ``target``; returns the new total."""
        entries = sorted(self._entries(), key=lambda item: item[1].st_mtime)
        total = sum(st.st_size for _, st in entries)
        for path, st in entries:
            if total <= target:
                break
            if self._discard(path):
                total -= st.st_size
        return total

    @staticmethod
    def _discard(path: Path) -> bool:
        try:
            path.unlink()
            return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            logger.bind(stage="remove").warning("could not remove cache entry {}: {}", path, exc)
            return False
