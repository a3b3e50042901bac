"""Which filesystem a folder lives on (``/proc/self/mountinfo``) and how auto mode watches it."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher import mounts

MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:35 / /srv/share rw,relatime shared:20 - nfs4 files:/export rw,vers=4.2
41 40 0:36 / /srv/share/local rw - tmpfs tmpfs rw
42 22 0:37 / /mnt/with\\040space rw - cifs //nas/fotos rw
43 22 0:38 / /mnt/bind rw,nosuid - fuse.bindfs /srv/src rw,user_id=0
44 22 0:39 / /mnt/blk rw - fuseblk /dev/sdb1 rw
"""


@pytest.fixture
def info(tmp_path: Path) -> Path:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    return path


@pytest.mark.parametrize(("folder", "fstype", "polls"), [
    ("/srv/share/produtos", "nfs4", True),
    ("/srv/share/local/produtos", "tmpfs", False),  # the longest mount point wins
    ("/srv/sharex/produtos", "ext4", False),  # a prefix of the name is not a parent
    ("/mnt/with space/produtos", "cifs", True),  # mountinfo escapes spaces
    ("/mnt/bind/produtos", "fuse.bindfs", True),
    ("/mnt/blk/produtos", "fuseblk", True),
    ("/home/loja/produtos", "ext4", False),
])
def test_the_mount_of_a_folder_and_whether_it_needs_polling(info: Path, folder: str, fstype: str,
                                                             polls: bool) -> None:
    mount = mounts.longest_prefix(mounts.parse(info.read_text()), Path(folder))
    assert mount is not None and (mount.fstype, mount.needs_polling) == (fstype, polls)


def test_auto_polls_a_folder_on_a_share_and_says_why(tmp_path: Path) -> None:
    share = tmp_path.resolve() / "share"
    (share / "produtos").mkdir(parents=True)
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO + f"50 22 0:40 / {share} rw - nfs4 files:/x rw\n")

    choice = mounts.choose("auto", share / "produtos" / "not-yet", info)

    assert choice.mode == "polling"
    assert choice.why == (f"auto: filesystem nfs4 mounted at {share}, where inotify misses "
                          "writes made by other hosts")
    assert mounts.choose("auto", tmp_path, info).mode == "native"


def test_a_set_mode_stands_and_an_unreadable_mountinfo_means_native(tmp_path: Path) -> None:
    assert mounts.choose("native", Path("/srv/share"), tmp_path / "x").why == "WATCH_MODE=native"
    assert mounts.choose("polling", Path("/"), tmp_path / "x").mode == "polling"
    assert mounts.choose("auto", Path("/"), tmp_path / "missing").mode == "native"


def test_this_machines_mountinfo_names_the_root_filesystem() -> None:
    mount = mounts.mount_of(Path("/"))
    assert mount is not None and mount.point == Path("/") and mount.fstype


def test_the_mounts_inside_a_folder_but_not_the_folder_itself(info: Path) -> None:
    points = [str(m.point) for m in mounts.inside(Path("/mnt"), info)]
    assert points == ["/mnt/bind", "/mnt/blk", "/mnt/with space"]
    assert [m.fstype for m in mounts.inside(Path("/srv/share"), info)] == ["tmpfs"]
    assert mounts.inside(Path("/srv/share/local"), info) == []
    assert mounts.inside(Path("/srv"), info.with_name("missing")) == []  # no mountinfo
