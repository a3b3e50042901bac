"""Exceptions, split by what happens next.

- ConfigError: the daemon refuses to start (exit code 2), naming the key and the value.
- RejectedImage: the input can never become a thumbnail; it goes to ``_falhas/`` with a reason.
- RemovalUnavailable: no background remover can serve now (remote down, fallback off); the
  file waits in the inbox and is processed later. Never a reason to reject a good photo.
- ClaimLost: another daemon took the file back while this one held it (this daemon was frozen or
  cut off past the claim lease); this daemon's result is dropped, never published.
- ModelError: the local model is missing or broken: a fault of the setup (see ``faults``), not of
  the photo.
"""

from __future__ import annotations

from collections.abc import Mapping
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


# Why a file ended in _falhas/, as a short fixed word: a metric label and a line of the .erro.txt.
REJECT_KINDS = (
    "link",                 # a symbolic or hard link, never followed
    "not_a_file",           # a FIFO, device or socket
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
