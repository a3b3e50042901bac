"""Publish and reject: the only code that writes thumbnails and moves finished inputs.

A thumbnail is written to a hidden temp name in its final folder, fsynced, renamed over the final
name, and the folder fsynced: a reader sees the old file or the new one, never half of one. Only
then does the original leave the claim folder for ``_processados/``.

Every write that ends a claim takes a ``fence``: asked right before the rename that makes the
result visible, it says whether this daemon still owns the input. When it does not, nothing is
published and ``ClaimLost`` is raised (see ``watcher.claim``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from watcher.claim import fsync_dir, move_no_clobber
from watcher.errors import ClaimLost
from watcher.masking import mask_text

# Asked right before a result becomes visible: does this daemon still own the input?
Fence = Callable[[], bool]

TEMP_SUFFIX = ".tmp"
NOTE_SUFFIX = ".erro.txt"
# bytes in one name on Linux filesystems: derived names (temp, note) must stay within it
_NAME_MAX = 255


def _cut(name: str, limit: int) -> str:
    """``name`` shortened to at most ``limit`` bytes on disk, never splitting a character."""
    return os.fsencode(name)[:limit].decode("utf-8", "ignore")


def _inside(root: Path, rel: PurePosixPath) -> Path:
    """``root / rel``, refusing anything that would land outside ``root``."""
    if rel.is_absolute() or any(part in ("", ".", "..") for part in rel.parts):
        raise ValueError(f"unsafe relative path {rel!s}")
    target = root.joinpath(*rel.parts)
    if not os.path.abspath(target).startswith(os.path.abspath(root) + os.sep):
        raise ValueError(f"{rel!s} escapes {root}")
    return target


def _make_dirs(root: Path, rel_dir: PurePosixPath) -> Path:
    """Create ``root/rel_dir`` refusing to pass through symlinks someone planted there."""
    current = root
    current.mkdir(parents=True, exist_ok=True)
    for part in rel_dir.parts:
        current = current / part
        try:
            current.mkdir()
        except FileExistsError:
            if current.is_symlink() or not current.is_dir():
                raise ValueError(f"{current} is not a real folder") from None
    return current


def write_atomic(root: Path, rel: PurePosixPath, data: bytes, tag: str,
                 fence: Fence | None = None) -> tuple[Path, bool]:
    """Write ``data`` to ``root/rel`` atomically; returns (path, whether it replaced a file).

    ``fence`` is asked after the data is durable and before the rename: False drops the temp
    file and raises ``ClaimLost``, leaving ``root/rel`` as it was."""
    return write_set(root, [(rel, data)], tag, fence)[0]


def write_set(root: Path, files: list[tuple[PurePosixPath, bytes]], tag: str,
              fence: Fence | None = None) -> list[tuple[Path, bool]]:
    """Publish every output of one photo, as close to all at once as a filesystem allows.

    Each file is first written in full to a hidden temp name in its folder and fsynced; only when
    all are durable (and the fence still holds) are they renamed, one after another, then their
    folders fsynced. A failure before the renames leaves no output changed; a crash during them
    leaves some outputs new and the original still claimed, so the rerun that follows writes the
    whole set again. Returns (path, replaced) per file, in order.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for rel, data in files:
            staged.append(_stage_file(root, rel, data, tag))
        if fence is not None and not fence():
            raise ClaimLost("nothing was published")
    except BaseException:
        for temp, _target in staged:
            _unlink_quietly(temp)
        raise
    done = []
    for temp, target in staged:
        replaced = os.path.lexists(target)
        if target.is_symlink():
            os.unlink(target)  # never write through a link someone put in our output
        os.replace(temp, target)
        done.append((target, replaced))
    for folder in dict.fromkeys(target.parent for _temp, target in staged):
        fsync_dir(folder)
    return done


def _stage_file(root: Path, rel: PurePosixPath, data: bytes, tag: str) -> tuple[Path, Path]:
    """Write ``data`` durably to a hidden temp file beside ``root/rel``; (temp, target)."""
    target = _inside(root, rel)
    folder = _make_dirs(root, rel.parent)
    hidden = f".{_cut(target.name, 100)}.{_cut(tag, 40)}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    temp = folder / hidden  # the random part makes it unique; name and tag tell a human whose
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(temp)
        raise
    os.close(fd)
    return temp, target


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def archive_original(claimed: Path, processed_root: Path, rel: PurePosixPath) -> Path:
    """Move the original out of the claim folder into ``_processados/<rel>`` (never overwriting)."""
    target = _inside(processed_root, rel)
    _make_dirs(processed_root, rel.parent)
    where = _move_claimed(claimed, target)
    fsync_dir(where.parent)
    return where


def reject(claimed: Path, failed_root: Path, rel: PurePosixPath, *, reason: str, kind: str,
           stage: str, error: str, detail: str, advice: str = "",
           fence: Fence | None = None) -> Path:
    """Move the input, byte-for-byte, to ``_falhas/<rel>``; write ``<name>.erro.txt`` beside it.

    The shops read the note: ``error`` and ``detail``, texts of exceptions, are masked
    (``masking.mask_text``), since they may quote a URL with a password or token in it."""
    _make_dirs(failed_root, rel.parent)
    if fence is not None and not fence():
        raise ClaimLost("it was not moved to _falhas/")
    where = _move_claimed(claimed, _inside(failed_root, rel))
    when = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    text = (f"{reason}\n"
            + (f"{advice}\n" if advice else "")
            + f"\nfile: {rel}\n"
            f"stage: {stage}\n"
            f"error: {mask_text(error)}\n"
            f"detail: {mask_text(detail)}\n"
            f"time: {when}\n"
            f"kind: {kind}\n")
    note = where.name + NOTE_SUFFIX
    if len(os.fsencode(note)) > _NAME_MAX:
        note = _cut(where.name, _NAME_MAX - len(NOTE_SUFFIX)) + NOTE_SUFFIX
    note_rel = PurePosixPath(where.relative_to(failed_root).parent.as_posix(), note)
    # a name that is not UTF-8 (old Windows shares) is written back as the bytes it came as
    write_atomic(failed_root, note_rel, text.encode("utf-8", "surrogateescape"), "erro")
    return where


def _move_claimed(claimed: Path, target: Path) -> Path:
    """``move_no_clobber`` of a claimed input; ``ClaimLost`` when it is no longer there to move
    (another daemon took it back between the fence and this rename)."""
    try:
        return move_no_clobber(claimed, target)
    except FileNotFoundError:
        if os.path.lexists(claimed):
            raise  # the input is there: the error is about the target
        raise ClaimLost("it left the claim folder before it could be moved") from None
