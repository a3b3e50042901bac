"""Faults of the setup: reported once, cleared by their own check, named by the folder at fault."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
from loguru import logger

from watcher.claim import Claims
from watcher.faults import Faults, claim_failed, folder_of, is_setup_error, probe_write


def test_a_fault_is_logged_once_and_cleared_when_its_check_passes() -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}")
    try:
        faults, broken = Faults(), {"still": True}

        def check() -> str | None:
            return "still broken" if broken["still"] else None

        assert faults.report("model", "the model is missing", "fetch it", check)
        assert not faults.report("model", "the model is missing", "fetch it", check)
        assert faults and [f.key for f in faults.active()] == ["model"]
        assert faults.recheck() == 1 and faults
        broken["still"] = False
        assert faults.recheck() == 0 and not faults
    finally:
        logger.remove(sink)
    assert sum("the model is missing; fetch it" in line for line in lines) == 1
    assert sum("fixed after" in line for line in lines) == 1


def test_a_check_that_raises_keeps_the_fault() -> None:
    faults = Faults()

    def check() -> str | None:
        raise OSError("still no")

    faults.report("x", "x is wrong", "fix x", check)
    assert faults.recheck() == 1


def test_setup_errors_and_the_folder_they_name(tmp_path: Path) -> None:
    root = tmp_path / "out"
    nested = root / "loja" / ".a.jpg.tmp"
    assert is_setup_error(PermissionError(errno.EACCES, "denied"))
    assert is_setup_error(OSError(errno.EROFS, "read-only"))
    assert not is_setup_error(OSError(errno.ENOSPC, "full"))
    assert not is_setup_error(ValueError("no"))
    assert folder_of(PermissionError(errno.EACCES, "denied", str(nested)), root) == root / "loja"
    # a path outside the folder (or none) names the folder itself
    assert folder_of(PermissionError(errno.EACCES, "denied", "/etc/x"), root) == root
    assert folder_of(PermissionError(errno.EACCES, "denied"), root) == root


def test_folder_fault_checks_the_folder_itself(tmp_path: Path) -> None:
    faults = Faults()
    folder = tmp_path / "gone"
    faults.folder(folder, "output", "Permission denied")
    (fault,) = faults.active()
    assert str(folder) in fault.problem and "writable" in fault.fix
    assert faults.recheck() == 1  # still missing
    folder.mkdir()
    assert probe_write(folder) is None
    assert faults.recheck() == 0


@pytest.fixture
def locked() -> Iterator[list[Path]]:
    """Folders to make immutable (``chattr +i``: root cannot write them either); unlocked after."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr to lock a folder against root")
    folders: list[Path] = []
    yield folders
    for folder in folders:
        subprocess.run(["chattr", "-i", str(folder)], check=False)


def _lock(locked: list[Path], folder: Path) -> None:
    subprocess.run(["chattr", "+i", str(folder)], check=True)
    locked.append(folder)


def _claim(claims: Claims, faults: Faults, rel: str) -> None:
    """Claim ``rel``, which must fail, and report why."""
    with pytest.raises(OSError) as caught:
        claims.claim(PurePosixPath(rel))
    assert claim_failed(faults, caught.value, claims.inbox / rel,
                        claims.mine / PurePosixPath(rel).parent, claims.inbox)


def test_a_claim_refused_by_its_shop_folder_holds_that_folder_only(
        tmp_path: Path, locked: list[Path]) -> None:
    inbox = tmp_path / "produtos"
    shop = inbox / "loja-a"
    shop.mkdir(parents=True)
    (shop / "a.jpg").write_bytes(b"photo")
    claims, faults = Claims(inbox, inbox / ".thumbgen", "me"), Faults()
    claims.setup()
    _lock(locked, shop)
    _claim(claims, faults, "loja-a/a.jpg")
    assert not faults and faults.active() == []  # the other shops go on
    (held,) = faults.held()
    assert held.folder == shop and "cannot write the shop folder" in held.problem
    assert f"chown -R {os.geteuid()}:{os.getegid()} {shop}" in held.fix
    assert faults.recheck() == 1
    subprocess.run(["chattr", "-i", str(shop)], check=True)
    assert faults.recheck() == 0 and faults.held() == []


def test_a_claim_refused_by_the_claim_folder_is_the_state_folder_fault(
        tmp_path: Path, locked: list[Path]) -> None:
    inbox = tmp_path / "produtos"
    inbox.mkdir()
    (inbox / "a.jpg").write_bytes(b"photo")
    claims, faults = Claims(inbox, inbox / ".thumbgen", "me"), Faults()
    claims.setup()
    _lock(locked, claims.mine)
    _claim(claims, faults, "a.jpg")
    assert faults.held() == []
    (fault,) = faults.active()  # every photo would fail alike
    assert fault.key == f"folder:{claims.mine}" and "state folder" in fault.problem


def test_a_claim_across_a_mount_inside_the_inbox_names_the_mount(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    inbox = tmp_path / "produtos"
    net = inbox / "loja-net"
    net.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(net)], check=True)
    try:
        (net / "sub").mkdir()
        (net / "sub" / "a.jpg").write_bytes(b"photo")
        claims, faults = Claims(inbox, inbox / ".thumbgen", "me"), Faults()
        claims.setup()
        _claim(claims, faults, "loja-net/sub/a.jpg")
        assert (net / "sub" / "a.jpg").read_bytes() == b"photo"  # untouched
        assert not (claims.mine / "loja-net").exists()  # no empty loja-net/sub/ left in the claims
        assert not faults
        (held,) = faults.held()
        assert held.folder == net and "(tmpfs) mounted inside the inbox" in held.problem
        assert "mount the share at the inbox itself" in held.fix
        assert faults.recheck() == 1
    finally:
        subprocess.run(["umount", "-l", str(net)], check=False)
    assert faults.recheck() == 0
