"""Retention clean-up on a real tree: only what expired goes; dry run and real run agree."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
from prometheus_client import CollectorRegistry

from watcher import backup, cleanup, restore
from watcher.stages import publish
from watcher.config import Settings
from watcher.metrics import Metrics

DAY = 86400
HOUR = 3600


def put(path: Path, age: float = 0.0, data: bytes = b"x") -> Path:
    """A file whose mtime is ``age`` seconds in the past (negative: in the future)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    when = time.time() - age
    os.utime(path, (when, when))
    return path


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(PROCESSED_RETENTION_DAYS=30, FAILED_RETENTION_DAYS=90, CACHE_TTL=HOUR)


@pytest.fixture
def tree(settings: Settings) -> dict[str, Path]:
    """Files of every kind; ctime is now for all of them, mtimes are set per file."""
    s, state = settings, settings.state_path
    return {
        # the inbox and published thumbnails: never candidates, however old
        "inbox": put(s.upload_path / "loja" / "foto.jpg", 400 * DAY),
        "thumbnail": put(s.output_path / "loja" / "foto.jpg", 400 * DAY),
        "claimed": put(state / "claimed" / "w1" / ".foto.jpg.x.tmp", 400 * DAY),
        # _processados: by the later of mtime and ctime
        "processed_old_photo": put(s.processed_path / "loja" / "antiga.jpg", 900 * DAY),
        "processed_recent": put(s.processed_path / "nova.jpg", -20 * DAY),
        # _falhas: a file and its reason go together, when the younger of the two expires
        "failed": put(s.failed_path / "ruim.jpg", 400 * DAY),
        "failed_reason": put(s.failed_path / "ruim.jpg.erro.txt", 400 * DAY),
        "failed_young": put(s.failed_path / "quebrada.png", 400 * DAY),
        "failed_young_reason": put(s.failed_path / "quebrada.png.erro.txt", -10 * DAY),
        # cache entries by mtime + CACHE_TTL
        "cache_old": put(state / "cache" / "ab" / "abcd.png", 2 * HOUR),
        "cache_fresh": put(state / "cache" / "cd" / "cdef.png", 10),
        # thumbgen's temp files, older than an hour
        "temp_state": put(state / ".lixo.abcd.tmp", 2 * HOUR),
        "temp_output": put(s.output_path / "loja" / ".foto.jpg.w1.abcd.tmp", 2 * HOUR),
        "temp_cache": put(state / "cache" / "ab" / ".abcd.1234.tmp", 2 * HOUR),
        "temp_backup": put(s.backup_path / ".produtos_20260101_000000.tar.gz.ab.tmp", 2 * HOUR),
        "temp_fresh": put(s.output_path / ".novo.jpg.w1.abcd.tmp", 60),
        "not_ours": put(s.output_path / "loja" / "visible.tmp", 2 * HOUR),
    }


def test_today_only_stale_cache_and_temp_files_go(settings: Settings, tree) -> None:
    planned = {(r.kind, r.path) for r in cleanup.plan(settings)}
    assert planned == {("cache", tree["cache_old"]), ("temp", tree["temp_state"]),
                       ("temp", tree["temp_output"]), ("temp", tree["temp_cache"]),
                       ("temp", tree["temp_backup"])}
    # an original with an old mtime that arrived just now (ctime) is not expired
    assert tree["processed_old_photo"] not in {p for _, p in planned}


def test_dry_run_and_real_run_agree(settings: Settings, tree) -> None:
    later = time.time() + 31 * DAY + 2 * HOUR
    dry = cleanup.run(settings, dry_run=True, now=later)
    assert all(path.exists() for path in (r.path for r in dry))  # the dry run removes nothing
    metrics = Metrics(CollectorRegistry())
    real = cleanup.run(settings, metrics, now=later)
    assert real == dry
    gone = {name for name, path in tree.items() if not path.exists()}
    assert gone == {r_name for r_name, path in tree.items() if path in {r.path for r in real}}
    assert gone == {"processed_old_photo", "cache_old", "cache_fresh", "temp_state",
                    "temp_output", "temp_cache", "temp_backup", "temp_fresh"}
    assert tree["processed_recent"].exists()  # 11 days in _processados by its mtime
    count = metrics.registry.get_sample_value
    assert count("thumbgen_cleanup_removed_total", {"kind": "processed"}) == 1
    assert count("thumbgen_cleanup_removed_total", {"kind": "temp"}) == 5
    assert cleanup.plan(settings, now=later) == []


def test_rejects_leave_with_their_reason(settings: Settings, tree) -> None:
    removed = {r.path for r in cleanup.run(settings, now=time.time() + 91 * DAY)}
    assert {tree["failed"], tree["failed_reason"]} <= removed
    # the pair whose reason is younger than 90 days stays whole
    assert tree["failed_young"].exists() and tree["failed_young_reason"].exists()
    for name in ("inbox", "thumbnail", "claimed", "not_ours"):
        assert tree[name].exists(), name
    assert (settings.processed_path / "loja").is_dir()  # folders stay


def test_a_linked_processed_folder_is_not_followed(settings: Settings, tmp_path: Path) -> None:
    elsewhere = put(tmp_path / "elsewhere" / "precious.jpg", 400 * DAY)
    settings.upload_path.mkdir(parents=True)
    os.symlink(elsewhere.parent, settings.processed_path)
    assert cleanup.run(settings, now=time.time() + 400 * DAY) == []
    assert elsewhere.exists()


def test_cli_dry_run_lists_exactly_what_the_real_run_removes(settings: Settings, tree,
                                                            run_thumbgen) -> None:
    env = {"PROCESSED_RETENTION_DAYS": 30, "FAILED_RETENTION_DAYS": 90, "CACHE_TTL": HOUR}
    dry = run_thumbgen("cleanup", "--dry-run", **env)
    assert dry.returncode == 0, dry.stderr
    assert all(path.exists() for path in tree.values())
    real = run_thumbgen("cleanup", **env)
    assert real.returncode == 0, real.stderr

    def listed(out: str, verb: str) -> list[str]:
        return [line.split(" d  ", 1)[1] for line in out.splitlines() if line.startswith(verb)]
    assert listed(dry.stdout, "would remove") == listed(real.stdout, "removed")
    assert len(listed(real.stdout, "removed")) == 5 and "5 file(s) removed" in real.stdout
    assert {Path(p) for p in listed(real.stdout, "removed")} == {
        tree[name] for name in ("cache_old", "temp_state", "temp_output", "temp_cache",
                                "temp_backup")}
    assert not any(Path(p).exists() for p in listed(real.stdout, "removed"))
    assert run_thumbgen("cleanup", "--dry-run", **env).stdout.strip() == "0 file(s) would be removed"


# -- what killed writers leave among users' files -----------------------------------------------

RESTORE_TEMP = ".thumbgen-restore.{}.tmp"  # the name restore gives a member while writing it


def age(path: Path, seconds: float) -> Path:
    when = time.time() - seconds
    os.utime(path, (when, when), follow_symlinks=False)
    return path


def kill_a_restore_mid_file(settings: Settings, thumbgen_env: dict[str, str]) -> Path:
    """Back up a 32 MB photo, lose it, restore it and SIGKILL the restore while it writes the
    photo: the temp file it leaves in the inbox."""
    photo = put(settings.upload_path / "loja" / "grande.jpg", data=os.urandom(32 << 20))
    set_id = backup.run_backup(settings, names=["produtos"]).set_id
    photo.unlink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("THUMBGEN_")}
    script = str(Path(sys.executable).with_name("thumbgen"))
    proc = subprocess.Popen([script, "restore", set_id, "produtos"], env={**env, **thumbgen_env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None:
            temps = [e for e in os.scandir(photo.parent) if e.name.startswith(".thumbgen-restore.")]
            if temps and temps[0].stat().st_size > 0:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the restore ended before it could be killed"
    assert not photo.exists()
    [temp] = [p for p in photo.parent.iterdir() if p.name.startswith(".thumbgen-restore.")]
    return temp


def leave_a_note_temp(settings: Settings, tmp_path: Path, name: str,
                      monkeypatch: pytest.MonkeyPatch) -> Path:
    """Reject a photo, the note's rename failing as if the daemon died just before it: the note's
    temp file stays in ``_falhas/``, named by the real writer."""
    claimed = put(tmp_path / "claimed" / name)
    folder = settings.failed_path / "loja"
    before = set(folder.iterdir()) if folder.exists() else set()
    with monkeypatch.context() as patch:
        def died(*args: object, **kwargs: object) -> None:
            raise OSError(errno.EIO, "the daemon died here")
        patch.setattr(os, "replace", died)
        with pytest.raises(OSError):
            publish.reject(claimed, settings.failed_path, PurePosixPath("loja", name),
                           reason="r", kind="damaged", stage="validate", error="E", detail="d")
    [temp] = [p for p in set(folder.iterdir()) - before if p.name.endswith(".tmp")]
    return temp


def test_cli_removes_what_killed_writers_left_once_an_hour_old(
        make_settings: Callable[..., Settings], thumbgen_env: dict[str, str], tmp_path: Path,
        run_thumbgen, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(SETTLE_SECONDS=0)
    s, hexes = settings, iter(["0123456789ab", "ba9876543210", "abcdefabcdef", "aaaaaaaaaaaa"])
    elsewhere = put(s.base_path / "outra-pasta" / RESTORE_TEMP.format(next(hexes)), 2 * HOUR)
    gone = {
        "killed restore": age(kill_a_restore_mid_file(settings, thumbgen_env), 2 * HOUR),
        "note": age(leave_a_note_temp(settings, tmp_path, "foto.jpg", monkeypatch), 2 * HOUR),
        # a name past 100 bytes is cut in the temp name, never inside a character
        "long note": age(leave_a_note_temp(settings, tmp_path, "€" * 40 + ".jpg", monkeypatch),
                         2 * HOUR),
        "restore in backgrounds": put(s.background_path / RESTORE_TEMP.format(next(hexes)),
                                      2 * HOUR),
        "restore in _processados": put(s.processed_path / "loja" / elsewhere.name, 2 * HOUR),
    }
    assert ".erro.txt." not in gone["long note"].name  # cut: only its length says it is a note's
    young_note = leave_a_note_temp(settings, tmp_path, "nova.jpg", monkeypatch)
    stay = {
        "young restore": put(s.background_path / "loja" / RESTORE_TEMP.format(next(hexes)), 600),
        "young note": age(young_note, 600),
        "not a restore target": elsewhere,
        "claimed": put(s.state_path / "claimed" / "w1" / elsewhere.name, 2 * HOUR),
        "inbox's own .tmp": put(s.upload_path / "loja" / ".rascunho.tmp", 2 * HOUR),
        "no hex": put(s.upload_path / "loja" / ".thumbgen-restore.tmp", 2 * HOUR),
        "upper-case hex": put(s.upload_path / RESTORE_TEMP.format("0123456789AB"), 2 * HOUR),
        "not hidden": put(s.upload_path / RESTORE_TEMP.format(next(hexes))[1:], 2 * HOUR),
        "user's .tmp in _falhas": put(s.failed_path / "loja" / ".rascunho.tmp", 2 * HOUR),
        "not a note's": put(s.failed_path / "loja" / ".foto.jpg.erro.1234abcd.tmp", 2 * HOUR),
        "rejected photo": s.failed_path / "loja" / "foto.jpg",
    }
    link = s.upload_path / "loja" / RESTORE_TEMP.format("cccccccccccc")
    os.symlink(elsewhere, link)  # a link is never removed nor followed, nor is a linked folder
    os.symlink(elsewhere.parent, s.background_path / "atalho")
    age(link, 2 * HOUR)

    dry = run_thumbgen("cleanup", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert all(path.exists() for path in gone.values())
    real = run_thumbgen("cleanup")
    assert real.returncode == 0, real.stderr

    def listed(out: str, verb: str) -> list[str]:
        return [line.split(" d  ", 1)[1] for line in out.splitlines() if line.startswith(verb)]
    assert listed(dry.stdout, "would remove") == listed(real.stdout, "removed")
    assert all(line.startswith("removed temp ") for line in real.stdout.splitlines()[:-1])
    assert sorted(listed(real.stdout, "removed")) == sorted(str(p) for p in gone.values())
    assert not [name for name, path in gone.items() if path.exists()]
    assert not [name for name, path in stay.items() if not path.exists()]
    assert link.is_symlink() and (s.background_path / "atalho").is_symlink()
    assert run_thumbgen("cleanup", "--dry-run").stdout.strip() == "0 file(s) would be removed"


def test_a_restore_in_progress_keeps_its_temp_file_young(
        make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch) -> None:
    """A cleanup run the moment a restored photo is complete but not yet named finds nothing to
    remove: the photo gets its archived (old) mtime only once it has its name."""
    settings = make_settings(SETTLE_SECONDS=0)
    photo = put(settings.upload_path / "loja" / "antiga.jpg", 400 * DAY, b"an old photo")
    set_id = backup.run_backup(settings, names=["produtos"]).set_id
    photo.unlink()
    removed: list[cleanup.Removal] = []
    give_name = restore._link_no_clobber

    def clean_up_then_name(temp: str, name: str, folder_fd: int) -> None:
        removed.extend(cleanup.run(settings))
        give_name(temp, name, folder_fd)
    monkeypatch.setattr(restore, "_link_no_clobber", clean_up_then_name)

    _, reports = restore.restore_set(settings, set_id, ["produtos"])
    assert removed == []
    assert reports["produtos"].restored == ["loja/antiga.jpg"] and not reports["produtos"].refused
    assert photo.read_bytes() == b"an old photo"
    assert photo.stat().st_mtime == pytest.approx(time.time() - 400 * DAY, abs=60)
    assert not [p for p in photo.parent.iterdir() if p.name.startswith(".thumbgen-restore.")]
