"""What a backup is made of and what its files are called: the components, the set ID, the
archive, manifest and verification names, and the two exceptions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from watcher.config import Settings
from watcher.stages.publish import TEMP_SUFFIX

COMPONENTS = ("produtos", "backgrounds", "thumbnails", "config", "logs")
ID_FORMAT = "%Y%m%d_%H%M%S"
ARCHIVE_SUFFIX = ".tar.gz"
MANIFEST_SUFFIX = ".manifest.jsonl"
VERIFIED_SUFFIX = ".verified.json"
MANIFEST_FORMAT = 1
LOCK_NAME = ".backup.lock"
CHUNK = 1024 * 1024
# Photos barely compress; level 6 costs a fraction of level 9's CPU for the same size.
COMPRESS_LEVEL = 6
FILE_NAME = re.compile(r"^(?P<component>[a-z]+)_(?P<id>\d{8}_\d{6})"
                       r"(?P<suffix>\.tar\.gz|\.manifest\.jsonl|\.verified\.json)$")
ID_IN_NAME = re.compile(r"_(\d{8}_\d{6})\b")


class BackupCancelled(Exception):
    """The daemon is stopping; the archive in progress was abandoned (its temp file removed)."""


class BackupBusy(Exception):
    """Another backup holds the lock of ``BACKUP_PATH``."""


@dataclass(frozen=True)
class Component:
    name: str
    root: Path
    exclude: tuple[Path, ...] = ()
    # append-only files (logs) are archived as a snapshot even while they are being written
    snapshot_growing: bool = False
    # written into the manifest's header as ``settings`` (the config component's)
    settings: dict[str, Any] | None = None


def components(settings: Settings) -> dict[str, Component]:
    """Component name → what it archives. ``config`` is ``BASE_PATH/config`` and a record of the
    settings in force."""
    exclude = (settings.state_path, settings.backup_path)
    return {
        "produtos": Component("produtos", settings.upload_path, exclude),
        "backgrounds": Component("backgrounds", settings.background_path, exclude),
        "thumbnails": Component("thumbnails", settings.output_path, exclude),
        "config": Component("config", settings.base_path / "config", exclude,
                            settings=effective_settings(settings)),
        "logs": Component("logs", settings.log_path, exclude, snapshot_growing=True),
    }


def effective_settings(settings: Settings) -> dict[str, Any]:
    """What ``thumbgen config`` prints, for the manifest: KEY → value (secrets masked), and
    KEY → where it came from. The settings of the process that makes the backup."""
    return {"note": "the settings in force in the process that made this backup, secrets masked",
            "values": settings.masked(), "sources": dict(settings.sources)}


def is_own_temp(name: str) -> bool:
    """A temp file thumbgen writes: hidden, ending in ``.tmp``. Never a user's file or output."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def archive_name(component: str, set_id: str) -> str:
    return f"{component}_{set_id}{ARCHIVE_SUFFIX}"


def manifest_path(archive: Path) -> Path:
    return archive.with_name(archive.name[: -len(ARCHIVE_SUFFIX)] + MANIFEST_SUFFIX)


def verified_path(archive: Path) -> Path:
    return archive.with_name(archive.name[: -len(ARCHIVE_SUFFIX)] + VERIFIED_SUFFIX)


def id_time(set_id: str) -> float | None:
    """Unix time of a set ID (local time), or None if it is not a valid date."""
    try:
        return datetime.strptime(set_id, ID_FORMAT).timestamp()
    except ValueError:
        return None
