"""Uploads: streamed to hidden temp files, renamed into the inbox only once complete.

The body is parsed as it arrives by ``python-multipart`` (never by hand). Each photo goes to a
temp file under ``produtos/.thumbgen/uploads/`` (hidden: the daemon never takes it, and on the
inbox's filesystem, so the rename into the inbox is atomic). A part is refused the moment it shows
what it is: its first bytes are not a JPEG, PNG or WebP, or it grows past ``MAX_FILE_SIZE``; its
temp file is removed at once and the rest of it is read and dropped. Only when the whole body
has arrived, and its page token is good, are the accepted photos renamed into
``produtos/<folder>/`` — never over a file already there (a name taken gets `` (2)``).

The form must send its token before the photos (the page's form does): a photo part that comes
before a good token stops the upload before anything is written.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from watcher.claim import fsync_dir, move_no_clobber
from watcher.inbox import is_ignored_name
from watcher.stages.validate import sniff
from watcher.web.failures import _real_folders
from watcher.web.files import Refused, safe_name

FILE_FIELD = "fotos"
TEXT_FIELDS = ("csrf", "pasta")
TEXT_MAX = 1024
NAME_MAX_BYTES = 200
STALE_TEMP_SECONDS = 24 * 3600
_SNIFF_BYTES = 12
Message = tuple[str, dict[str, Any]]  # a catalogue key under page., and its fields


class Abort(Exception):
    """The whole upload is refused: nothing is written."""

    def __init__(self, key: str, **fields: Any) -> None:
        super().__init__(key)
        self.message: Message = (key, fields)


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    text: bytearray = field(default_factory=bytearray)
    fd: int | None = None
    temp: Path | None = None
    head: bytearray = field(default_factory=bytearray)
    size: int = 0
    skip: bool = False


class Receiver:
    """One multipart body: ``feed`` it the chunks, then ``finish`` it; ``discard`` on failure."""

    def __init__(self, boundary: bytes, temp_dir: Path, *, max_file_bytes: int, max_files: int,
                 formats: tuple[str, ...], token_ok: Callable[[str], bool]) -> None:
        self.temp_dir = temp_dir
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.formats = formats
        self.token_ok = token_ok
        self.fields: dict[str, str] = {}
        self.accepted: list[tuple[str, Path]] = []  # (name, temp file)
        self.refused: list[Message] = []
        self.files = 0
        self._part = _Part()
        self._header = (bytearray(), bytearray())
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._begin, "on_part_data": self._data, "on_part_end": self._end,
            "on_header_field": lambda d, s, e: self._header[0].extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header[1].extend(d[s:e]),
            "on_header_end": self._header_end, "on_headers_finished": self._headers_done})

    def feed(self, chunk: bytes) -> None:
        self._parser.write(chunk)

    def finish(self) -> None:
        self._parser.finalize()
        if not self.token_ok(self.fields.get("csrf", "")):
            raise Abort("refused_stale")

    def discard(self) -> None:
        """Remove every temp file of this upload (refused, failed, or not renamed)."""
        self._close_part(remove=True)
        for _, temp in self.accepted:
            _unlink(temp)
        self.accepted.clear()

    # -- the parser's callbacks ---------------------------------------------------------------

    def _begin(self) -> None:
        self._part = _Part()

    def _header_end(self) -> None:
        name, value = (bytes(b).decode("latin-1") for b in self._header)
        self._part.headers[name.strip().lower()] = value.strip()
        self._header = (bytearray(), bytearray())

    def _headers_done(self) -> None:
        part = self._part
        _, options = parse_options_header(part.headers.get("content-disposition", ""))
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            part.skip = part.name not in TEXT_FIELDS
            return
        raw = options[b"filename"]
        if part.name != FILE_FIELD or not raw:  # another field, or no photo chosen
            part.skip = True
            return
        if not self.token_ok(self.fields.get("csrf", "")):
            raise Abort("refused_stale")
        self.files += 1
        if self.files > self.max_files:
            raise Abort("refused_count", count=self.max_files)
        try:
            part.filename = _upload_name(raw)
        except Refused:
            shown = raw.decode("utf-8", "replace")[-80:].replace("\n", " ")
            self.refused.append(("refused_name", {"file": shown}))
            part.skip = True
            return
        part.temp = self.temp_dir / f".upload-{secrets.token_hex(8)}.tmp"
        part.fd = os.open(part.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.skip:
            return
        chunk = data[start:end]
        if part.fd is None:  # a text field
            if len(part.text) + len(chunk) > TEXT_MAX:
                raise Abort("refused_stale")
            part.text.extend(chunk)
            return
        part.size += len(chunk)
        if part.size > self.max_file_bytes:
            self._refuse("refused_size", limit=self.max_file_bytes / 1024**2)
            return
        if len(part.head) < _SNIFF_BYTES:
            part.head.extend(chunk[:_SNIFF_BYTES])
            if len(part.head) >= _SNIFF_BYTES and not self._photo(part):
                return
        view = memoryview(chunk)
        while view:
            view = view[os.write(part.fd, view):]

    def _end(self) -> None:
        part = self._part
        if part.skip:
            return
        if part.fd is None:
            self.fields[part.name] = part.text.decode("utf-8", "replace")
            return
        if len(part.head) < _SNIFF_BYTES and not self._photo(part):
            return
        assert part.temp is not None and part.filename is not None
        os.fsync(part.fd)
        os.close(part.fd)
        part.fd = None
        self.accepted.append((part.filename, part.temp))

    def _photo(self, part: _Part) -> bool:
        """Is it a photo by its first bytes? If not, it is refused here and now."""
        if sniff(bytes(part.head)) in self.formats:
            return True
        self._refuse("refused_type")
        return False

    def _refuse(self, key: str, **fields: Any) -> None:
        self.refused.append((key, {"file": self._part.filename, **fields}))
        self._close_part(remove=True)
        self._part.skip = True

    def _close_part(self, remove: bool) -> None:
        part = self._part
        if part.fd is not None:
            os.close(part.fd)
            part.fd = None
            if remove and part.temp is not None:
                _unlink(part.temp)


def _upload_name(raw: bytes) -> str:
    """The file's own name, as the inbox may take it (some browsers send a whole path)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused("not UTF-8") from None
    name = text.replace("\\", "/").rsplit("/", 1)[-1].strip()
    safe_name(name)
    if is_ignored_name(name) or len(os.fsencode(name)) > NAME_MAX_BYTES:
        raise Refused(f"{name!r} is no name for an input")
    return name


def shop_folder(text: str) -> PurePosixPath:
    """The folder of the inbox a shop typed or chose: '' or one plain folder name."""
    text = text.strip()
    if not text:
        return PurePosixPath()
    if "/" in text or text.startswith("_") or len(os.fsencode(text)) > NAME_MAX_BYTES:
        raise Refused(f"{text!r} is no shop folder")
    return PurePosixPath(safe_name(text))


def publish(accepted: list[tuple[str, Path]], inbox: Path,
            folder: PurePosixPath) -> list[PurePosixPath]:
    """Rename each complete upload into ``inbox/folder``, never over a file already there."""
    target_folder = _real_folders(inbox, folder)
    placed = []
    for name, temp in accepted:
        where = move_no_clobber(temp, target_folder / name)
        placed.append(PurePosixPath(where.relative_to(inbox).as_posix()))
    fsync_dir(target_folder)
    return placed


def clear_stale(temp_dir: Path) -> None:
    """Temp files left by a daemon that died during an upload (a day old: no upload lasts so
    long; other daemons on the share may be receiving theirs now)."""
    cutoff = time.time() - STALE_TEMP_SECONDS
    try:
        entries = list(os.scandir(temp_dir))
    except OSError:
        return
    for entry in entries:
        try:
            if entry.name.startswith(".upload-") and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
        except OSError:
            pass


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


__all__ = ["Receiver", "Abort", "publish", "shop_folder", "clear_stale", "FILE_FIELD"]
