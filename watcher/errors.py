"""Exceptions, split by what happens next.

- ConfigError: the daemon refuses to start (exit code 2), naming the key and the value.
  FolderError, one of them: a folder it needs cannot be created (read-only, not its user's).
- RejectedImage: the input can never become a thumbnail; it goes to ``_falhas/`` with a reason.
- RemovalUnavailable: no background remover can serve now (remote down, fallback off); the
  file waits in the inbox and is processed later. Never a reason to reject a good photo.
- ClaimLost: another daemon took the file back while this one held it (this daemon was frozen or
  cut off past the claim lease); this daemon's result is dropped, never published.
- ModelError: the local model is missing or broken: a fault of the setup (see ``faults``), not of
  the photo.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from watcher import messages


class ThumbgenError(Exception):
    """Base class of every error thumbgen raises on purpose."""


class ConfigError(ThumbgenError):
    """A configuration value is missing or invalid."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(f"invalid configuration: {key}={value!r}: {reason}")


# What to do when a folder cannot be created, by the OS's reason; {holder} is the nearest folder
# that exists on the way to it, {blocker} the file that stands in the way, {uid} the daemon's user.
_FOLDER_ADVICES = {
    errno.EACCES: "the daemon runs as uid {uid}: give it {holder} (`chown -R {uid}:{gid} "
                  "{holder}`; for a container, on the host folder mounted there)",
    errno.EROFS: "{holder} is on a read-only filesystem: mount a writable folder there (for a "
                 "container: -v <host folder>:{holder})",
    errno.ENOTDIR: "{blocker} is a file, not a folder: move it away",
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "the daemon's user (uid {uid}) is over its disk quota: free some space",
}
_FOLDER_ADVICES[errno.EPERM] = _FOLDER_ADVICES[errno.EACCES]
_FOLDER_ADVICES[errno.EEXIST] = _FOLDER_ADVICES[errno.ENOTDIR]
_FOLDER_ADVICE = "check the path and its permissions (`thumbgen diagnose` checks every folder)"


class FolderError(ConfigError):
    """A folder the daemon needs cannot be created, or written in when it exists: one line
    naming the folder, the setting it comes from, the OS's reason and what to do (exit code 2,
    like any bad configuration)."""

    def __init__(self, key: str, path: Path, error: OSError, *, writing: bool = False) -> None:
        holder = path if writing else next((p for p in path.parents if p.is_dir()), Path("/"))
        blocker = next((p for p in (*reversed(path.parents), path)
                        if p.exists() and not p.is_dir()), path)
        advice = _FOLDER_ADVICES.get(error.errno or 0, _FOLDER_ADVICE)
        what_to_do = advice.format(uid=os.geteuid(), gid=os.getegid(), holder=holder,
                                   blocker=blocker)
        reason = (f"{error.strerror or error}; {what_to_do}; "
                  f"or set {key} to a folder the daemon can write")
        action = "write in" if writing else "create"
        ThumbgenError.__init__(self, f"cannot {action} the folder {path} ({key}): {reason}")
        self.key, self.value, self.reason = key, path, reason


def make_folder(path: Path, key: str) -> None:
    """``mkdir -p path`` at start-up; FolderError naming ``key`` (the setting it comes from)
    instead of a traceback when it cannot be done."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FolderError(key, path, exc) from None


# Why a file ended in _falhas/, as a short fixed word: a metric label and a line of the .erro.txt.
REJECT_KINDS = (
    "link",                 # a symbolic or hard link, never followed
    "not_a_file",           # a FIFO, device or socket
    "not_readable",         # the daemon's user may not read it (its permissions)
    "empty",                # 0 bytes
    "too_large",            # over MAX_FILE_SIZE
    "too_many_pixels",      # over MAX_PIXELS, or a decompression bomb
    "not_a_photo",          # no known image signature
    "format_not_accepted",  # a known format left out of ALLOWED_FORMATS
    "incomplete",           # cut short: still uploading, or a broken transfer
    "damaged",              # decodes to nothing usable
    "no_product",           # the background removal left nothing
    "refused_by_remote",    # the remote app refuses this photo while it serves others
)
UNEXPECTED = "unexpected"  # a bug or an unforeseen error: the file is kept, the log has the rest

# What the shop can do about it: the second line of the .erro.txt, under the reason. English here
# (tests and logs); the note itself is written in LANGUAGE from the catalogues of watcher/messages.
ADVICE = {kind: messages.text(messages.ENGLISH, f"advice.{kind}")
          for kind in (*REJECT_KINDS, UNEXPECTED)}


class RejectedImage(ThumbgenError):
    """The input cannot become a thumbnail.

    ``reason`` is one plain sentence a shop assistant understands; ``detail`` is for engineers;
    ``kind`` is one of ``REJECT_KINDS``, for counting. ``key`` and ``fields`` name the sentence in
    the message catalogues (``reason.<key>``), so the shop reads it in its own language; build one
    with ``because()``, which takes the English ``reason`` from the catalogue too.
    """

    def __init__(self, reason: str, detail: str = "", stage: str = "validate", *,
                 kind: str, key: str | None = None, fields: Mapping[str, Any] | None = None) -> None:
        if kind not in REJECT_KINDS:
            raise ValueError(f"unknown rejection kind {kind!r}")
        self.reason = reason
        self.detail = detail
        self.stage = stage
        self.kind = kind
        self.key = key
        self.fields = dict(fields or {})
        super().__init__(f"{reason} ({detail})" if detail else reason)

    @classmethod
    def because(cls, key: str, detail: str = "", stage: str = "validate", *, kind: str,
                **fields: Any) -> RejectedImage:
        """The rejection whose sentence is ``reason.<key>`` of the catalogues."""
        return cls(messages.text(messages.ENGLISH, f"reason.{key}", **fields), detail, stage,
                   kind=kind, key=key, fields=fields)

    def shop_lines(self, language: str) -> tuple[str, str]:
        """What a shop reads in ``language``: what is wrong, and what to do."""
        return messages.shop_lines(language, self.kind, self.key, self.fields, self.reason)


class RemovalUnavailable(ThumbgenError):
    """No background remover can serve right now; the file must wait, not be rejected."""


class ClaimLost(ThumbgenError):
    """The file is no longer ours: publishing now could overwrite another daemon's newer work."""


class ModelError(ThumbgenError):
    """The local model is missing, corrupt or cannot be fetched."""
