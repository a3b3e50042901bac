"""Backups: one ``tar.gz`` per component, written atomically, with a sha256 manifest beside it.

A backup set is every archive that shares one ID, the local time it started
(``produtos_20261129_030000.tar.gz``, ``config_20261129_030000.tar.gz``, …). Each archive is
written to a hidden temp name in ``BACKUP_PATH``, fsynced and renamed to its final name (never
over an existing one); then its manifest (``<name>.manifest.jsonl``) is written the same way. The
manifest is the commit mark: an archive without one is incomplete. Its first line is a header
(archive size and sha256, counts, what was left out); every other line is one member with its
own sha256, so ``verify`` can check the archive and every file in it.

Left out on purpose: the daemon's own state (``.thumbgen/``: claims, temp files, cache), its
temp files anywhere, ``BACKUP_PATH`` itself, and files changed within the settle window (still
being written; the manifest names them). Append-only logs are the exception: the live
``app.log`` is archived as a snapshot of what it held when it was read.

An archive and its manifest are never readable by more people than its files were: world-readable
only if every file and folder in it is; group-readable only if every one is readable by a group
that is also the archive's. The ``config`` manifest's header also records the settings in force
(``settings``, secrets masked), since the daemon may be configured from outside that folder
(``/etc/thumbgen`` under systemd, a ConfigMap and env on Kubernetes).

The package: ``names.py`` (components, set IDs, file names) → ``archive.py`` (one component's
archive and manifest) → ``sets.py`` (a whole run under a lock, listing, retention). Import from
here.
"""

from __future__ import annotations

from watcher.backup.archive import (ArchiveResult, backup_component, publish_no_clobber,
                                    write_manifest, write_temp)
from watcher.backup.names import (ARCHIVE_SUFFIX, CHUNK, COMPONENTS, ID_FORMAT, LOCK_NAME,
                                  MANIFEST_SUFFIX, VERIFIED_SUFFIX, BackupBusy, BackupCancelled,
                                  Component, archive_name, components, effective_settings, id_time,
                                  is_own_temp, manifest_path, verified_path)
from watcher.backup.sets import (ArchiveInfo, BackupReport, BackupSet, find_set, list_sets, prune,
                                 run_backup)

__all__ = ["ARCHIVE_SUFFIX", "CHUNK", "COMPONENTS", "ID_FORMAT", "LOCK_NAME", "MANIFEST_SUFFIX",
           "VERIFIED_SUFFIX", "ArchiveInfo", "ArchiveResult", "BackupBusy", "BackupCancelled",
           "BackupReport", "BackupSet", "Component", "archive_name", "backup_component",
           "components", "effective_settings", "find_set", "id_time", "is_own_temp", "list_sets",
           "manifest_path", "prune", "publish_no_clobber", "run_backup", "verified_path",
           "write_manifest", "write_temp"]
