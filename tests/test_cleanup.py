"""Retention clean-up on a real tree: only what expired goes; dry run and real run agree."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from watcher import cleanup
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
