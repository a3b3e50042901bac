"""The only way the page reaches a file: a relative path checked, then opened one folder at a time.

A name from a URL or a form is refused when it is empty, absolute, holds ``..``, ``.``, an empty
part, a part starting with ``.`` (the daemon's temp files and ``.thumbgen/``), a backslash, NUL,
a newline or a carriage return. What is left is opened below its root with ``openat`` one part at
a time, every part with ``O_NOFOLLOW``: a symlink anywhere on the way is refused, even one swapped
in after a check, and nothing outside the root can be reached. The file itself must be regular.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

_BAD_CHARACTERS = ("\0", "\n", "\r", "\\")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
# Image types by their first bytes: what the page serves, and with which Content-Type.
_SIGNATURES = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))


class Refused(ValueError):
    """A name the page never serves or writes."""


def safe_rel(text: str) -> PurePosixPath:
    """``text`` (already percent-decoded) as a relative path the page may use, or ``Refused``."""
    if not text or any(c in text for c in _BAD_CHARACTERS) or text.startswith("/"):
        raise Refused(f"unsafe name {text!r}")
    parts = text.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        raise Refused(f"unsafe name {text!r}")
    return PurePosixPath(*parts)


def safe_name(text: str) -> str:
    """One file or folder name (no ``/``), as ``safe_rel`` would take it."""
    rel = safe_rel(text)
    if len(rel.parts) != 1:
        raise Refused(f"{text!r} is not a single name")
    return text


@contextmanager
def open_inside(root: Path, rel: PurePosixPath) -> Iterator[tuple[int, os.stat_result]]:
    """A read-only descriptor of the regular file ``root/rel`` and its stat, reached without
    following any link; ``Refused`` for anything else (``FileNotFoundError`` when absent)."""
    folder = os.open(root, _DIR_FLAGS)
    try:
        for part in rel.parts[:-1]:
            try:
                inner = os.open(part, _DIR_FLAGS, dir_fd=folder)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Refused(f"{rel}: {part} is not a real folder") from None
                raise
            os.close(folder)
            folder = inner
        try:
            fd = os.open(rel.parts[-1], _FILE_FLAGS, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Refused(f"{rel} is a link") from None
            raise
    finally:
        os.close(folder)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"{rel} is not a regular file")
        yield fd, st
    finally:
        os.close(fd)


def read_inside(root: Path, rel: PurePosixPath, max_bytes: int) -> tuple[bytes, os.stat_result]:
    """The bytes of ``root/rel`` (``open_inside``), refused beyond ``max_bytes``."""
    with open_inside(root, rel) as (fd, st):
        if st.st_size > max_bytes:
            raise Refused(f"{rel} has {st.st_size} bytes, more than {max_bytes}")
        chunks, got = [], 0
        while chunk := os.read(fd, 1 << 20):
            got += len(chunk)
            if got > max_bytes:
                raise Refused(f"{rel} grew past {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks), st


def image_type(data: bytes) -> str | None:
    """The Content-Type of an image by its content (JPEG, PNG, WebP, AVIF), else None."""
    for signature, content_type in _SIGNATURES:
        if data.startswith(signature):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:12] in (b"ftypavif", b"ftypavis"):
        return "image/avif"
    return None


__all__ = ["Refused", "safe_rel", "safe_name", "open_inside", "read_inside", "image_type"]
