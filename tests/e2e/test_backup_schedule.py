"""The daemon with backups every two seconds: archives appear while photos keep being processed."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import THUMBGEN, Daemon, wait_for
from watcher import backup

pytestmark = pytest.mark.e2e


def _complete_sets(d: Daemon) -> list[backup.BackupSet]:
    return [s for s in backup.list_sets(d.base / "backups") if s.complete]


def _archived(found: backup.BackupSet, component: str) -> set[str]:
    lines = backup.manifest_path(found.archives[component].path).read_text().splitlines()
    return {json.loads(line)["path"] for line in lines[1:]}


def test_scheduled_backups_while_processing(make_daemon: Callable[..., Daemon],
                                            data_dir: Path) -> None:
    photos = sorted((data_dir / "products").glob("*.jpg"))[:5]
    d = make_daemon(SCHEDULER_ENABLED="true", BACKUP_SCHEDULE="*/2 * * * * *",
                    CLEANUP_SCHEDULE="*/3 * * * * *")
    for src in photos[:2]:
        shutil.copyfile(src, d.inbox / src.name)
    d.start()
    d.wait_started()

    wait_for(lambda: _complete_sets(d), 30, message="a first complete backup set")
    first = _complete_sets(d)[0].set_id
    (d.inbox / "segunda").mkdir()
    for src in photos[2:]:  # a second batch, dropped while backups keep running
        shutil.copyfile(src, d.inbox / "segunda" / src.name)
    d.wait_idle(len(photos))
    # a set written after the last photo was done holds every original in _processados
    wanted = {f"_processados/{p.name}" for p in photos[:2]} | {
        f"_processados/segunda/{p.name}" for p in photos[2:]}
    wait_for(lambda: wanted <= _archived(_complete_sets(d)[-1], "produtos"), 30,
             message="a backup set with every processed original")
    assert d.stop(signal.SIGTERM) == 0, d.log()[-3000:]

    sets = _complete_sets(d)
    assert len(sets) >= 2 and sets[0].set_id == first
    assert len(d.thumbnails()) == len(photos)
    newest = sets[-1]
    assert {"app.log"} <= _archived(newest, "logs")
    assert not _archived(newest, "thumbnails").isdisjoint(
        {p.relative_to(d.output).as_posix() for p in d.thumbnails()})
    log = d.log()
    assert "scheduled backup failed" not in log and "scheduled cleanup failed" not in log
    # nothing half-written stays behind, even if SIGTERM came in the middle of an archive
    assert not [p.name for p in (d.base / "backups").iterdir() if p.name.endswith(".tmp")]
    verify = subprocess.run([THUMBGEN, "backup", "--verify", newest.set_id], env=d.env,
                            cwd=d.base, capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0 and verify.stdout.count(": OK") == 5, verify.stdout
