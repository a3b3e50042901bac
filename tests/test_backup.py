"""Backups: real trees, real tar.gz archives, the real CLI; retention; SIGKILL mid-archive."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from watcher import backup, cleanup, restore
from watcher.backup import archive
from watcher.config import Settings
from watcher.metrics import Metrics

DAY = 86400
OLD = time.time() - 3600  # settled long ago


def make_tree(inbox: Path) -> None:
    """Subfolders, unicode names (NFC and NFD side by side), an empty file, an empty folder."""
    files = {
        "sub/ação/foto 1.jpg": os.urandom(3000),
        "sub/ação/日本語 ファイル.txt": "olá".encode(),
        "caf\u00e9.txt": b"nfc",
        "cafe\u0301.txt": b"nfd",
        "emoji 📦/caixa.png": os.urandom(500),
        "a/b/c/d/deep.txt": b"deep",
        "vazio.txt": b"",
        "_processados/loja/velha.jpg": os.urandom(1000),
        "_falhas/ruim.jpg": b"not an image",
        "_falhas/ruim.jpg.erro.txt": "Não é uma imagem.\n".encode(),
    }
    for rel, data in files.items():
        path = inbox / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (inbox / "pasta vazia").mkdir()
    (inbox / "a" / "vazia também").mkdir()
    settle_all(inbox)


def settle_all(root: Path) -> None:
    for path in root.rglob("*"):
        os.utime(path, (OLD, OLD), follow_symlinks=False)


def add_daemon_state(settings: Settings) -> None:
    """What must never reach an archive: claims, cache, temp files of the pipeline."""
    state = settings.state_path
    for rel in ("claimed/w1/em processo.jpg", "claimed/w1/.heartbeat", "cache/ab/abcd.png"):
        (state / rel).parent.mkdir(parents=True, exist_ok=True)
        (state / rel).write_bytes(b"state")
    (settings.upload_path / "sub" / ".foto.jpg.w1.ab12cd34.tmp").write_bytes(b"half")
    settle_all(settings.upload_path)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """rel path → bytes (files) or None (folders), leaving out what a backup leaves out."""
    found: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".thumbgen"]
        folder = Path(dirpath)
        for name in dirnames:
            found[(folder / name).relative_to(root).as_posix()] = None
        for name in filenames:
            if not backup.is_own_temp(name):
                found[(folder / name).relative_to(root).as_posix()] = (folder / name).read_bytes()
    return found


def manifest_of(archive: Path) -> tuple[dict, list[dict]]:
    lines = backup.manifest_path(archive).read_text(encoding="utf-8").splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    s = make_settings(SETTLE_SECONDS=2)
    s.upload_path.mkdir(parents=True)
    make_tree(s.upload_path)
    return s


def test_backup_restore_round_trip_is_byte_for_byte(settings: Settings, run_thumbgen,
                                                    tmp_path: Path) -> None:
    add_daemon_state(settings)
    report = backup.run_backup(settings, names=["produtos"])
    assert not report.failed and [a.component for a in report.archives] == ["produtos"]

    target = tmp_path / "restored"
    target.mkdir()
    done = run_thumbgen("restore", report.set_id, "produtos", "--to", str(target))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 refused" in done.stdout
    restored = snapshot(target / "produtos")
    assert restored == snapshot(settings.upload_path)
    assert "caf\u00e9.txt" in restored and "cafe\u0301.txt" in restored
    assert restored["vazio.txt"] == b"" and restored["pasta vazia"] is None
    assert not list(target.rglob(".thumbgen*")) and not list(target.rglob("*.tmp"))


def test_daemon_state_temp_files_and_growing_files_are_left_out(
        settings: Settings, make_settings: Callable[..., Settings]) -> None:
    add_daemon_state(settings)
    (settings.upload_path / "chegando.jpg").write_bytes(b"still uploading")  # mtime: now
    settings.log_path.mkdir(parents=True)
    (settings.log_path / "app.log").write_text('{"text": "written right now"}\n')
    os.symlink("/etc/hostname", settings.upload_path / "atalho.txt")

    report = backup.run_backup(settings, names=["produtos", "logs"])
    by_name = {a.component: a.archive for a in report.archives}
    with tarfile.open(by_name["produtos"]) as tar:
        names = tar.getnames()
    assert not [n for n in names if ".thumbgen" in n or n.endswith(".tmp")]
    assert "chegando.jpg" not in names and "atalho.txt" not in names
    header, entries = manifest_of(by_name["produtos"])
    skipped = {s["path"]: s["reason"] for s in header["skipped"]}
    assert "still being written" in skipped["chegando.jpg"]
    assert "symbolic link" in skipped["atalho.txt"]
    assert header["excluded"] == [".thumbgen/"]
    assert {e["path"] for e in entries} == set(names)
    # an append-only log is archived as it is, and marked as a snapshot
    _, log_entries = manifest_of(by_name["logs"])
    log = settings.log_path / "app.log"
    assert log_entries == [{"path": "app.log", "type": "file", "size": log.stat().st_size,
                            "sha256": restore.file_sha256(log), "snapshot": True}]


def test_manifest_matches_archive_and_verify_finds_damage(settings: Settings,
                                                          run_thumbgen) -> None:
    report = backup.run_backup(settings)
    assert len(report.archives) == len(backup.COMPONENTS)
    archive = next(a.archive for a in report.archives if a.component == "produtos")
    header, entries = manifest_of(archive)
    assert header["archive"] == {"name": archive.name, "size": archive.stat().st_size,
                                 "sha256": restore.file_sha256(archive)}
    assert header["files"] == sum(e["type"] == "file" for e in entries) == 10

    ok = run_thumbgen("backup", "--verify", report.set_id)
    assert ok.returncode == 0 and ok.stdout.count(": OK") == 5, ok.stdout + ok.stderr
    listing = run_thumbgen("backups")
    assert f"{report.set_id}" in listing.stdout and "complete   yes" in listing.stdout

    # one flipped byte in the archive
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    bad = run_thumbgen("backup", "--verify", report.set_id, "produtos")
    assert bad.returncode == 1 and "differs from its manifest" in bad.stdout
    assert "FAILED" in run_thumbgen("backups").stdout


def test_verify_checks_every_member_against_the_manifest(settings: Settings) -> None:
    archive = backup.run_backup(settings, names=["produtos"]).archives[0].archive
    header, entries = manifest_of(archive)
    for entry in entries:
        if entry["path"] == "vazio.txt":
            entry["sha256"] = "0" * 64
    path = backup.manifest_path(archive)
    path.write_text("".join(json.dumps(x) + "\n" for x in [header, *entries]), encoding="utf-8")
    assert restore.verify_archive(archive) == ["vazio.txt: content differs from the manifest"]


def test_metrics_and_ids_of_sets_in_the_same_second(settings: Settings) -> None:
    metrics = Metrics(CollectorRegistry())
    now = time.time()
    first = backup.run_backup(settings, metrics, ["config"], now=now)
    second = backup.run_backup(settings, metrics, ["config"], now=now)
    assert first.set_id != second.set_id  # never the same name twice
    value = metrics.registry.get_sample_value
    assert value("thumbgen_backups_total", {"outcome": "done"}) == 2
    assert value("thumbgen_backup_bytes") == second.size > 0
    assert value("thumbgen_last_backup_timestamp_seconds") >= now


def test_a_second_backup_at_the_same_time_is_refused(settings: Settings) -> None:
    settings.backup_path.mkdir(parents=True)
    with open(settings.backup_path / backup.LOCK_NAME, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(backup.BackupBusy):
            backup.run_backup(settings)
    assert backup.list_sets(settings.backup_path) == []


def test_sigkill_during_a_backup_leaves_no_archive_under_a_final_name(
        settings: Settings, run_thumbgen, thumbgen_env: dict[str, str]) -> None:
    big = settings.upload_path / "grande"
    big.mkdir()
    for n in range(4):  # random bytes do not compress: about a second of gzip work
        (big / f"{n}.bin").write_bytes(os.urandom(12 * 1024 * 1024))
    settle_all(settings.upload_path)
    dest = settings.backup_path
    env = {k: v for k, v in os.environ.items() if not k.startswith("THUMBGEN_")}
    env.update(thumbgen_env, THUMBGEN_SETTLE_SECONDS="2")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("thumbgen")), "backup",
                             "produtos"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (dest.is_dir() and any(p.name.endswith(".tmp") for p in dest.iterdir())):
        assert proc.poll() is None, "the backup ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL

    leftovers = sorted(p.name for p in dest.iterdir())
    assert not [n for n in leftovers if not n.startswith(".")], leftovers
    assert [n for n in leftovers if n.endswith(".tmp")]  # it really was killed mid-archive
    assert backup.list_sets(dest) == []
    # the lock died with the process: the next backup runs and is whole
    again = run_thumbgen("backup", "produtos", SETTLE_SECONDS=2)
    assert again.returncode == 0, again.stderr
    latest = backup.list_sets(dest)[-1]
    assert restore.verify_archive(latest.archives["produtos"].path) == []
    # the killed run's temp file goes with the cleanup, once it is an hour old
    stale = [r.path.name for r in cleanup.plan(settings, now=time.time() + 2 * 3600)
             if r.kind == "temp"]
    assert stale and all(name.startswith(".produtos_") for name in stale)


def _set(settings: Settings, days_ago: float, names: list[str] | None = None) -> str:
    report = backup.run_backup(settings, names=names, now=time.time() - days_ago * DAY,
                               prune_old=False)
    assert not report.failed
    return report.set_id


def _ids(settings: Settings) -> dict[str, list[str]]:
    return {s.set_id: sorted(s.archives) for s in backup.list_sets(settings.backup_path)}


def test_retention_removes_only_expired_archives(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(BACKUP_RETENTION_DAYS=30)
    for folder in (settings.upload_path, settings.base_path / "config"):
        folder.mkdir(parents=True)
    oldest, old = _set(settings, 40), _set(settings, 35)
    old_partial = _set(settings, 31, ["config"])
    recent_partial = _set(settings, 2, ["config"])
    (settings.backup_path / "notas.txt").write_text("mine")
    fresh = backup.run_backup(settings)  # prunes after writing
    ids = _ids(settings)
    assert oldest not in ids and old not in ids and old_partial not in ids
    assert ids[recent_partial] == ["config"] and len(ids[fresh.set_id]) == 5
    assert not list(settings.backup_path.glob(f"*{old}*"))  # manifests went with archives
    assert (settings.backup_path / "notas.txt").read_text() == "mine"
    assert {p.name for p in fresh.pruned} >= {backup.archive_name("produtos", oldest)}


def test_retention_keeps_the_newest_complete_set_however_old(
        make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(BACKUP_RETENTION_DAYS=30)
    settings.upload_path.mkdir(parents=True)
    first, newest_complete = _set(settings, 60), _set(settings, 50)
    config_only = _set(settings, 45, ["config"])
    broken = _set(settings, 40, ["produtos"])  # a crash after the rename: no manifest
    archive = settings.backup_path / backup.archive_name("produtos", broken)
    backup.manifest_path(archive).unlink()

    removed = backup.prune(settings.backup_path, 30)
    ids = _ids(settings)
    assert first not in ids and broken not in ids
    assert len(ids[newest_complete]) == 5  # the newest complete set stays whole
    assert ids[config_only] == ["config"]  # the newest good archive of a component stays
    assert archive in removed


def test_an_archive_is_no_more_readable_than_the_files_it_holds(settings: Settings) -> None:
    config_dir = settings.base_path / "config"
    config_dir.mkdir()
    secret = config_dir / "thumbgen.toml"
    secret.write_text('GRADIO_TOKEN = "hf_only_the_owner_may_read_this"\n')
    secret.chmod(0o600)
    settings.background_path.mkdir()
    shared = settings.background_path / "default.jpg"
    shared.write_bytes(b"a background")
    shared.chmod(0o640)  # the group may read it, the world may not
    settle_all(config_dir)
    settle_all(settings.background_path)

    report = backup.run_backup(settings, names=["produtos", "config", "backgrounds"])

    modes = {a.component: a.archive.stat().st_mode & 0o777 for a in report.archives}
    assert modes == {"produtos": 0o644, "config": 0o600, "backgrounds": 0o640}
    manifests = {a.component: backup.manifest_path(a.archive).stat().st_mode & 0o777
                 for a in report.archives}
    assert manifests == modes  # it names the files: no wider than the archive


def test_group_read_is_kept_only_for_the_archives_own_group() -> None:
    tally = archive._Tally()  # noqa: SLF001 — the rule itself, without needing root to chown
    for gid in (1000, 1001):
        tally.seen(os.stat_result((0o100640, 0, 0, 1, 0, gid, 0, 0, 0, 0)))

    assert tally.mode(archive_gid=1000) == 0o600  # a member of 1001 only must not gain access
    assert archive._Tally().mode(archive_gid=1000) == 0o644  # noqa: SLF001 — nothing private


def test_the_config_backup_records_the_settings_in_force_secrets_masked(
        make_settings: Callable[..., Settings]) -> None:
    token = "hf_aVeryPrivateToken12345"
    settings = make_settings(GRADIO_TOKEN=token, WORKERS=3,
                             GRADIO_API_URL="https://user:hunter22@example.invalid/app")
    assert not (settings.base_path / "config").exists()  # as under systemd: settings in /etc

    archive = backup.run_backup(settings, names=["config"]).archives[0].archive

    header, entries = manifest_of(archive)
    record = header["settings"]
    assert record["values"]["WORKERS"] == "3" and record["sources"]["WORKERS"].startswith("env")
    assert record["values"]["GRADIO_TOKEN"] == "hf****45"
    text = json.dumps(header)
    assert token not in text and "hunter22" not in text
    assert entries == [] and restore.verify_archive(archive) == []
