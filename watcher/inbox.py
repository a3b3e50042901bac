"""What counts as an input: the ignore rules, inbox-relative paths, and the shop (lane) a path
belongs to. When an input is ready (the settle rule) is ``settle.Settler``'s.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path, PurePosixPath

# Temp and system files that uploaders, editors and desktops leave behind.
IGNORED_PATTERNS = ("*.part", "*.crdownload", "*.tmp", "~$*", ".~lock*", ".DS_Store", "Thumbs.db",
                    "desktop.ini")
# one regex for them all, case-insensitive: scans call this once per file
_IGNORED = re.compile("|".join(fnmatch.translate(p.lower()) for p in IGNORED_PATTERNS))


def is_ignored_name(name: str) -> bool:
    """True for names never treated as inputs: hidden, ``_``-prefixed, temp and system files."""
    if name.startswith((".", "_")):
        return True
    return _IGNORED.match(name.lower()) is not None


def relative_input(inbox: Path, path: str | os.PathLike[str]) -> PurePosixPath | None:
    """The inbox-relative path of a candidate input, or None if it is not one.

    None when the path lies outside the inbox, or any part of it (folders included) is ignored:
    that keeps ``_processados/``, ``_falhas/`` and ``.thumbgen/`` out without special cases.
    """
    try:
        rel = Path(os.path.abspath(path)).relative_to(inbox)
    except ValueError:
        return None
    parts = rel.parts
    if not parts or any(part in ("..", "") or is_ignored_name(part) for part in parts):
        return None
    return PurePosixPath(*parts)


def lane_of(rel: str) -> str:
    """The shop a path belongs to: its first folder; files at the top level share one lane."""
    head, sep, _ = rel.partition("/")
    return head if sep else ""
