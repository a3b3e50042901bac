"""The unit of work and its outcomes."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath


class JobStatus(str, enum.Enum):
    DONE = "done"          # thumbnail published, original in _processados/
    REJECTED = "rejected"  # the input can never become a thumbnail: _falhas/ with a reason
    FAILED = "failed"      # an unexpected error: _falhas/ with the error, daemon goes on
    RELEASED = "released"  # put back in the inbox to try later (remote down, shutting down)
    LOST = "lost"          # another daemon claimed it first, or took it back from us while we
                           # were stalled past the lease, or it vanished: nothing to do


@dataclass
class Job:
    """One input file on its way through the pipeline.

    ``rel`` is the path relative to the inbox; every output mirrors it. ``claimed`` is where the
    file lives while this daemon owns it.
    """

    rel: PurePosixPath
    claimed: Path | None = None
    claim_id: tuple[int, int, int] | None = None  # claim.ClaimId: the fence before publishing
    started: float = field(default_factory=time.monotonic)
    durations: dict[str, float] = field(default_factory=dict)
    status: JobStatus | None = None
    reason: str = ""
    kind: str = ""  # why it was rejected or failed: errors.REJECT_KINDS or errors.UNEXPECTED
    hold: float | None = None  # released: how long it waits before it is taken again (None: the
                               # pool's default)
    output: Path | None = None
    backend: str = ""
    quiet: bool = False  # released again for a reason already logged: log it at debug level
