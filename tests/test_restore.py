"""Restore: hostile archives crafted here write nothing outside the target; no silent overwrite."""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from watcher import backup, restore
from watcher.config import Settings


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


def craft(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def hostile_members(outside: Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [
        _file("../escape.txt"),
        _file("a/../../escape2.txt"),
        _file(str(outside / "absolute.txt")),
        _special("link", tarfile.SYMTYPE, str(outside)),
        _file("link/through.txt"),
        _special("rel-link", tarfile.SYMTYPE, "../.."),
        _file("rel-link/through2.txt"),
        _special("hard", tarfile.LNKTYPE, "../escape.txt"),
        _special("dev", tarfile.CHRTYPE),
        _special("fifo", tarfile.FIFOTYPE),
        _file("ok/fine.txt", b"fine"),
        _file("./dot/fine2.txt", b"fine too"),
    ]


def everything_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """(target, outside): the restore target and a sibling folder nothing may reach."""
    target, outside = tmp_path / "zone" / "target", tmp_path / "zone" / "outside"
    target.mkdir(parents=True)
    outside.mkdir()
    return target, outside


def test_hostile_members_write_nothing_outside_the_target(tmp_path: Path, places) -> None:
    target, outside = places
    archive = craft(tmp_path / "evil.tar.gz", hostile_members(outside))
    report = restore.restore_archive(archive, target)

    assert everything_under(outside) == set()
    assert everything_under(tmp_path / "zone") == everything_under(target.parent)
    assert not (target.parent / "escape.txt").exists() and not (tmp_path / "escape2.txt").exists()
    assert everything_under(target) == {"ok", "ok/fine.txt", "dot", "dot/fine2.txt"}
    assert report.restored == ["ok/fine.txt", "dot/fine2.txt"]
    refused = dict(report.refused)
    assert len(refused) == 10
    assert "'..'" in refused["../escape.txt"]
    assert "absolute" in refused[str(outside / "absolute.txt")]
    assert "link" in refused["link"] and "link" in refused["hard"]
    assert "inside link member 'link'" in refused["link/through.txt"]
    assert "special" in refused["dev"] and "special" in refused["fifo"]


def _calls_to_restore(tmp_path: Path, n: int) -> int:
    """Python and C function calls made while restoring ``n`` link members, then ``n`` files."""
    members = [_special(f"links/l{i}", tarfile.SYMTYPE, "/etc") for i in range(n)]
    members += [_file(f"files/f{i}") for i in range(n)]
    archive = craft(tmp_path / f"{n}.tar.gz", members)
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        calls += event in ("call", "c_call")

    sys.setprofile(count)
    try:
        report = restore.restore_archive(archive, tmp_path / f"target-{n}")
    finally:
        sys.setprofile(None)
    assert len(report.restored) == len(report.refused) == n
    return calls


def test_the_link_check_grows_linearly_with_the_members(tmp_path: Path) -> None:
    """Work is counted in calls, not timed: twice the members, about twice the calls. Testing
    each member against every link seen before made 3.8 times the calls (18.8 s for 2 000 links
    and 2 000 files in the trial, 72 s for 4 000 + 4 000)."""
    small, large = _calls_to_restore(tmp_path, 100), _calls_to_restore(tmp_path, 200)
    assert large < 2.5 * small, f"{small} calls for 100 + 100 members, {large} for 200 + 200"


def test_links_already_in_the_target_are_not_followed(tmp_path: Path, places) -> None:
    target, outside = places
    (outside / "victim.txt").write_text("keep me")
    (target / "real.txt").write_text("keep me too")
    os.symlink(outside, target / "sub")  # links planted in the target
    os.symlink(outside / "victim.txt", target / "file-link")
    os.symlink("real.txt", target / "inner-link")
    archive = craft(tmp_path / "a.tar.gz", [_file("sub/x.txt", b"evil"),
                                            _file("file-link", b"evil"),
                                            _file("inner-link", b"new")])

    report = restore.restore_archive(archive, target)
    assert dict(report.refused).keys() == {"sub/x.txt", "file-link", "inner-link"}
    # --force replaces a link itself, and only when it points inside the target
    forced = restore.restore_archive(archive, target, force=True)
    assert dict(forced.refused).keys() == {"sub/x.txt", "file-link"}
    assert forced.restored == ["inner-link"]
    assert not (target / "inner-link").is_symlink()
    assert (target / "inner-link").read_bytes() == b"new"
    assert (target / "real.txt").read_text() == "keep me too"
    assert (outside / "victim.txt").read_text() == "keep me"
    assert everything_under(outside) == {"victim.txt"}


def test_own_checks_hold_without_the_data_filter(tmp_path: Path, places,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: with the standard library's filter switched off, nothing changes."""
    target, outside = places
    monkeypatch.setattr(tarfile, "data_filter", lambda member, dest: member)
    os.symlink(outside, target / "sub")
    members = [*hostile_members(outside), _file("sub/x.txt", b"evil")]
    report = restore.restore_archive(craft(tmp_path / "evil.tar.gz", members), target)
    assert everything_under(outside) == set()
    assert report.restored == ["ok/fine.txt", "dot/fine2.txt"]
    assert "link or not a folder" in dict(report.refused)["sub/x.txt"]


def _publish_set(settings: Settings, archive: Path, component: str = "produtos") -> str:
    """Put a crafted archive into BACKUP_PATH as a set, with a manifest that lists its members."""
    set_id = time.strftime(backup.ID_FORMAT)
    settings.backup_path.mkdir(parents=True, exist_ok=True)
    final = settings.backup_path / backup.archive_name(component, set_id)
    os.replace(archive, final)
    entries = []
    with tarfile.open(final) as tar:
        for member in tar:
            entry = {"path": member.name, "type": "dir" if member.isdir() else "file"}
            if member.isfile():
                entry["sha256"] = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
            entries.append(entry)
    header = {"format": 1, "id": set_id, "component": component,
              "archive": {"name": final.name, "size": final.stat().st_size,
                          "sha256": restore.file_sha256(final)}}
    backup.write_manifest(final, header, entries)
    return set_id


def test_cli_refuses_hostile_set_with_a_nonzero_exit(
        tmp_path: Path, places, make_settings: Callable[..., Settings], run_thumbgen) -> None:
    target, outside = places
    settings = make_settings()
    set_id = _publish_set(settings, craft(tmp_path / "evil.tar.gz", hostile_members(outside)))
    done = run_thumbgen("restore", set_id, "--to", str(target))
    assert done.returncode == 1
    assert "2 restored, 0 already there, 10 refused" in done.stdout
    assert "refused ../escape.txt" in done.stdout and "refused link/through.txt" in done.stdout
    assert everything_under(outside) == set()
    assert everything_under(target / "produtos") == {"ok", "ok/fine.txt", "dot", "dot/fine2.txt"}


@pytest.fixture
def backed_up(make_settings: Callable[..., Settings]) -> tuple[Settings, str]:
    settings = make_settings(SETTLE_SECONDS=0)
    (settings.upload_path / "loja").mkdir(parents=True)
    (settings.upload_path / "loja" / "foto.jpg").write_bytes(b"original photo")
    (settings.upload_path / "outra.jpg").write_bytes(b"another")
    return settings, backup.run_backup(settings, names=["produtos"]).set_id


def test_existing_files_are_never_overwritten_without_force(backed_up, run_thumbgen) -> None:
    settings, set_id = backed_up
    photo = settings.upload_path / "loja" / "foto.jpg"

    same = run_thumbgen("restore", set_id, "produtos")  # into the live folder, all still there
    assert same.returncode == 0 and "0 restored, 2 already there, 0 refused" in same.stdout

    photo.write_bytes(b"edited by the shop")
    (settings.upload_path / "outra.jpg").unlink()
    refused = run_thumbgen("restore", set_id, "produtos")
    assert refused.returncode == 1, refused.stdout
    assert "1 restored, 0 already there, 1 refused" in refused.stdout
    assert "refused loja/foto.jpg: a different file exists there" in refused.stdout
    assert photo.read_bytes() == b"edited by the shop"
    assert (settings.upload_path / "outra.jpg").read_bytes() == b"another"

    forced = run_thumbgen("restore", set_id, "produtos", "--force")
    assert forced.returncode == 0 and "1 restored, 1 already there" in forced.stdout
    assert photo.read_bytes() == b"original photo"
    assert not [p for p in settings.upload_path.rglob("*") if p.name.endswith(".tmp")]


def test_damaged_archive_or_member_is_refused(backed_up, tmp_path: Path) -> None:
    settings, set_id = backed_up
    archive = settings.backup_path / backup.archive_name("produtos", set_id)
    header, entries = restore.read_manifest(archive)

    entries["outra.jpg"]["sha256"] = "0" * 64  # the manifest says otherwise for one member
    report = restore.restore_archive(archive, tmp_path / "a", entries=entries)
    assert report.restored == ["loja/foto.jpg"]
    assert report.refused == [("outra.jpg", "content differs from the manifest")]
    assert not (tmp_path / "a" / "outra.jpg").exists()

    data = bytearray(archive.read_bytes())
    data[-20] ^= 0xFF
    archive.write_bytes(bytes(data))
    whole = restore.restore_component(archive, tmp_path / "b")
    assert whole.restored == [] and "differs from its manifest" in whole.refused[0][1]
    assert not (tmp_path / "b").exists()


def test_unknown_set_or_component(backed_up, run_thumbgen) -> None:
    _, set_id = backed_up
    assert run_thumbgen("restore", "19990101_000000").returncode == 1
    missing = run_thumbgen("restore", set_id, "logs")
    assert missing.returncode == 1 and "has no logs archive" in missing.stderr
    assert run_thumbgen("restore", set_id, "nada").returncode == 2  # not a component
