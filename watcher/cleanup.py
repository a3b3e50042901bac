"""Retention clean-up: what thumbgen may delete, and only that.

- ``processed``: originals in ``_processados/``, in there longer than PROCESSED_RETENTION_DAYS;
- ``failed``: a file in ``_falhas/`` with its ``.erro.txt``, longer than FAILED_RETENTION_DAYS;
- ``cache``: entries in ``.thumbgen/cache/`` whose mtime + CACHE_TTL has passed (the cache's
  own rule, ``stages/removal/cache.py``); everything in there is disposable;
- ``temp``: what a killed writer left behind, older than an hour (by mtime: a writer keeps it
  fresh). In thumbgen's own folders, ``.thumbgen/`` (claims excluded), ``OUTPUT_PATH`` and
  ``BACKUP_PATH``, any hidden ``.tmp`` file. Elsewhere only the exact names thumbgen's writers
  give: in ``_falhas/``, a note's (``.<name>.erro.txt.erro.<8 hex>.tmp``, ``publish.write_atomic``
  with tag ``erro``); in the folders ``thumbgen restore`` writes to without ``--to`` (each backup
  component's: the inbox tree, backgrounds, thumbnails, ``BASE_PATH/config``, logs), a restore's
  (``.thumbgen-restore.<12 hex>.tmp``). A restore ``--to`` another folder is not known here: a
  killed one leaves its temp for whoever owns that folder.

"In there longer than" uses the later of mtime and ctime: a rename into ``_processados/`` sets
ctime, while mtime may be years old (a photo copied with its date kept). The inbox's photos,
claims and published thumbnails are never candidates. ``plan()`` is the dry run; ``run()`` removes
exactly what ``plan()`` lists, re-checking each file just before removing it. Folders are left
in place, even when emptied: the pipeline may be creating a file in one at that very moment.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from watcher import backup, restore
from watcher.backup import is_own_temp
from watcher.config import Settings
from watcher.metrics import Metrics

DAY = 86400.0
TEMP_MAX_AGE = 3600.0
ERROR_SUFFIX = ".erro.txt"
CACHE_FOLDER = "cache"
CLAIMS_FOLDER = "claimed"
KINDS = ("processed", "failed", "cache", "temp")
# ``publish.write_atomic``'s temp name for a note (tag ``erro``): ``.<note>.erro.<8 hex>.tmp``,
# the note's own name (``<photo>.erro.txt``) cut to 100 bytes when it is longer
_NOTE_TEMP = re.compile(r"\.(?P<note>.+)\.erro\.[0-9a-f]{8}\.tmp", re.DOTALL)
_NOTE_CUT = 100


@dataclass(frozen=True)
class Removal:
    path: Path
    kind: str
    age: float  # seconds, by the rule of its kind


def _files(root: Path, skip: tuple[Path, ...] = (),
           wanted: Callable[[str], bool] | None = None) -> Iterator[tuple[Path, os.stat_result]]:
    """Regular files under ``root`` (only the ``wanted`` names), never through a link, never
    into ``skip``."""
    if root.is_symlink() or not root.is_dir():
        if root.is_symlink():
            logger.warning("cleanup skips {}: it is a symbolic link", root)
        return
    for dirpath, dirnames, filenames in os.walk(root):
        folder = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if folder / d not in skip)
        for name in sorted(filenames):
            if wanted is not None and not wanted(name):
                continue
            path = folder / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield path, st


def _arrived(st: os.stat_result) -> float:
    return max(st.st_mtime, st.st_ctime)


def _kept_for(settings: Settings, kind: str) -> float:
    return {"processed": settings.processed_retention_days * DAY,
            "failed": settings.failed_retention_days * DAY,
            "cache": float(settings.cache_ttl), "temp": TEMP_MAX_AGE}[kind]


def _age(kind: str, st: os.stat_result, now: float) -> float:
    # our own files (cache, temp) are written once, so mtime is their age; user files use arrival
    return now - (st.st_mtime if kind in ("cache", "temp") else _arrived(st))


# A killed writer's leftover among users' files is ``temp`` (gone after an hour), never theirs.
def _is_note_temp(name: str) -> bool:
    match = _NOTE_TEMP.fullmatch(name)
    if match is None:
        return False
    note, size = match["note"], len(os.fsencode(match["note"]))
    # a cut never splits a UTF-8 character, so it keeps 97 to 100 bytes (one of a name that is
    # not UTF-8 may keep fewer: that leftover stays, the safe side)
    return size <= _NOTE_CUT and (note.endswith(ERROR_SUFFIX) or size >= _NOTE_CUT - 3)


def _not_restore_temp(name: str) -> bool:
    return not restore.is_temp_name(name)


def _not_restore_or_note_temp(name: str) -> bool:
    return not (restore.is_temp_name(name) or _is_note_temp(name))


def _processed(settings: Settings, now: float) -> Iterator[Removal]:
    limit = _kept_for(settings, "processed")
    for path, st in _files(settings.processed_path, wanted=_not_restore_temp):
        if _age("processed", st, now) > limit:
            yield Removal(path, "processed", _age("processed", st, now))


def _failed(settings: Settings, now: float) -> Iterator[Removal]:
    """A rejected file and its ``.erro.txt`` go together, when the younger of the two expires."""
    limit = _kept_for(settings, "failed")
    groups: dict[Path, list[tuple[Path, os.stat_result]]] = {}
    for path, st in _files(settings.failed_path, wanted=_not_restore_or_note_temp):
        key = path.with_name(path.name[: -len(ERROR_SUFFIX)]) if path.name.endswith(
            ERROR_SUFFIX) else path
        groups.setdefault(key, []).append((path, st))
    for key in sorted(groups):
        members = groups[key]
        age = min(_age("failed", st, now) for _, st in members)
        if age > limit:
            yield from (Removal(path, "failed", age) for path, _ in sorted(members))


def _cache(settings: Settings, now: float) -> Iterator[Removal]:
    limit = _kept_for(settings, "cache")
    for path, st in _files(settings.state_path / CACHE_FOLDER):
        if not is_own_temp(path.name) and _age("cache", st, now) > limit:
            yield Removal(path, "cache", _age("cache", st, now))


Sweep = tuple[Path, tuple[Path, ...], Callable[[str], bool]]


def _sweeps(settings: Settings) -> list[Sweep]:
    """(folder, sub-folders left out, the names that are leftovers there)."""
    claims = settings.state_path / CLAIMS_FOLDER  # users' files in processing: never ours
    own: list[Sweep] = [(settings.state_path, (claims,), is_own_temp),
                        (settings.output_path, (), is_own_temp),
                        (settings.backup_path, (), is_own_temp),
                        (settings.failed_path, (), _is_note_temp)]
    # where ``thumbgen restore`` writes without --to; never into .thumbgen/ or BACKUP_PATH
    restored: list[Sweep] = [(comp.root, comp.exclude, restore.is_temp_name)
                             for comp in backup.components(settings).values()]
    return own + restored


def _temp(settings: Settings, now: float) -> Iterator[Removal]:
    seen: set[Path] = set()  # the folders nest (the inbox holds _falhas/): each file once
    for root, skip, wanted in _sweeps(settings):
        for path, st in _files(root, skip, wanted):
            if path not in seen and _age("temp", st, now) > TEMP_MAX_AGE:
                seen.add(path)
                yield Removal(path, "temp", _age("temp", st, now))


SOURCES: tuple[Callable[[Settings, float], Iterator[Removal]], ...] = (
    _processed, _failed, _cache, _temp)


def plan(settings: Settings, now: float | None = None) -> list[Removal]:
    """Everything a clean-up run at ``now`` removes (the dry run)."""
    now = time.time() if now is None else now
    return [removal for source in SOURCES for removal in source(settings, now)]


def _still_expired(settings: Settings, removal: Removal, now: float) -> bool:
    try:
        st = removal.path.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    # each member of an expired ``_falhas`` pair is itself past the limit, so one rule fits all
    return _age(removal.kind, st, now) > _kept_for(settings, removal.kind)


def run(settings: Settings, metrics: Metrics | None = None, *, dry_run: bool = False,
        now: float | None = None, cancel: threading.Event | None = None) -> list[Removal]:
    """Remove what ``plan()`` lists (nothing when ``dry_run``); returns what was removed."""
    now = time.time() if now is None else now
    if cancel is not None and cancel.is_set():
        return []
    planned = plan(settings, now)
    if dry_run:
        return planned
    removed = []
    for removal in planned:
        if cancel is not None and cancel.is_set():
            logger.info("cleanup interrupted: the daemon is stopping")
            break
        if not _still_expired(settings, removal, now):
            continue
        try:
            removal.path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.bind(file=str(removal.path)).warning("cleanup could not remove {}: {}",
                                                        removal.path, exc)
            continue
        removed.append(removal)
        if metrics is not None:
            metrics.cleanup_removed.labels(removal.kind).inc()
        logger.bind(file=str(removal.path)).debug("cleanup removed {} ({}, {:.1f} days old)",
                                                  removal.path, removal.kind, removal.age / DAY)
    if removed or planned:
        counts = {kind: sum(r.kind == kind for r in removed) for kind in KINDS}
        logger.info("cleanup removed {} file(s): {}", len(removed),
                    ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "none")
    return removed


__all__ = ["KINDS", "Removal", "plan", "run"]
