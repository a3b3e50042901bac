"""Exceptions, split by what happens next.

- ConfigError: the daemon refuses to start (exit code 2), naming the key and the value.
- RejectedImage: the input can never become a thumbnail; it goes to ``_falhas/`` with a reason.
- RemovalUnavailable: no background remover can serve now (remote down, fallback off); the
  file waits in the inbox and is processed later. Never a reason to reject a good photo.
"""

from __future__ import annotations


class ThumbgenError(Exception):
    """Base class of every error thumbgen raises on purpose."""


class ConfigError(ThumbgenError):
    """A configuration value is missing or invalid."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(f"invalid configuration: {key}={value!r}: {reason}")


class RejectedImage(ThumbgenError):
    """The input cannot become a thumbnail.

    ``reason`` is one plain sentence a shop assistant understands; ``detail`` is for engineers.
    """

    def __init__(self, reason: str, detail: str = "", stage: str = "validate") -> None:
        self.reason = reason
        self.detail = detail
        self.stage = stage
        super().__init__(f"{reason} ({detail})" if detail else reason)


class RemovalUnavailable(ThumbgenError):
    """No background remover can serve right now; the file must wait, not be rejected."""


class ModelError(ThumbgenError):
    """The local model is missing, corrupt or cannot be fetched."""
