"""Small previews the daemon draws itself, never the uploaded bytes as they came.

A preview is the file decoded by the same code that validates inputs (links refused, byte and
pixel caps, format by content, draft decoding, EXIF orientation, sRGB), shrunk to at most
``SIDE`` pixels and encoded again as a JPEG: a file that is really HTML or a script dressed as a
photo is never sent back to a browser. Previews are kept in memory by (file, size, mtime) up to
``MAX_COUNT`` of them and ``MAX_BYTES`` in all, least recently used out first; at most
``DECODERS`` are drawn at once, so a page of 48 large photos costs two decodes of memory at a
time, not 48.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath

from PIL import Image

from watcher.errors import RejectedImage
from watcher.stages import validate
from watcher.web.files import Refused, open_inside, read_inside

SIDE = 320
MAX_COUNT = 600
MAX_BYTES = 24 * 1024**2
DECODERS = 2
QUALITY = 80
_Key = tuple[str, str, int, int, int]  # root, rel, device+inode, size, mtime_ns


class Previews:
    def __init__(self, max_file_bytes: int, max_pixels: int, *, max_count: int = MAX_COUNT,
                 max_bytes: int = MAX_BYTES) -> None:
        self.limits = validate.Limits(max_file_bytes, max_pixels, ("jpeg", "png", "webp"),
                                      (SIDE // 2, SIDE // 2))
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._cache: OrderedDict[_Key, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._decoders = threading.BoundedSemaphore(DECODERS)

    def get(self, root: Path, rel: PurePosixPath) -> bytes | None:
        """The JPEG preview of ``root/rel``; None when it cannot be decoded as a photo.
        ``Refused`` and ``OSError`` (absent, unreadable) pass through."""
        with open_inside(root, rel) as (_, st):
            key = (str(root), str(rel), st.st_ino ^ (st.st_dev << 32), st.st_size,
                   st.st_mtime_ns)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        if not self._decoders.acquire(timeout=20):
            raise TimeoutError("every preview decoder is busy")
        try:
            preview = self._draw(root, rel)
        finally:
            self._decoders.release()
        if preview is not None:
            self._keep(key, preview)
        return preview

    def _draw(self, root: Path, rel: PurePosixPath) -> bytes | None:
        try:
            data, _ = read_inside(root, rel, self.limits.max_bytes)
            photo = validate.decode(data, self.limits)
        except (RejectedImage, Refused):
            return None
        del data
        image = photo.image
        image.thumbnail((SIDE, SIDE), Image.Resampling.BILINEAR)
        if image.mode == "RGBA":  # a cut-out: shown on white
            flat = Image.new("RGB", image.size, (255, 255, 255))
            flat.paste(image, mask=image.getchannel("A"))
            image = flat
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=QUALITY)
        return buffer.getvalue()

    def _keep(self, key: _Key, preview: bytes) -> None:
        with self._lock:
            if key in self._cache:
                return
            self._cache[key] = preview
            self._bytes += len(preview)
            while self._cache and (len(self._cache) > self.max_count
                                   or self._bytes > self.max_bytes):
                _, old = self._cache.popitem(last=False)
                self._bytes -= len(old)

    def size(self) -> tuple[int, int]:
        """(previews kept, their bytes)."""
        with self._lock:
            return len(self._cache), self._bytes


__all__ = ["Previews", "SIDE"]
