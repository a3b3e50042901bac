"""The folder poller of network shares: a folder is listed only when its mtime moved."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from watcher import poll
from watcher.poll import FolderPoller

P = PurePosixPath


@pytest.fixture
def found() -> list[PurePosixPath]:
    return []


def _bump(folder: Path) -> None:
    """Move a folder's mtime on, as a create does (a real create may land in the same tick)."""
    st = folder.stat()
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def test_an_idle_poll_lists_nothing_and_a_new_file_is_found(box: Path,
                                                            found: list[PurePosixPath]) -> None:
    for n in range(20):
        (box / f"loja-{n}" / "sub").mkdir(parents=True)
    (box / "loja-0" / "old.jpg").write_bytes(b"x")
    poller = FolderPoller(box, found.append)
    poller.prime()
    assert len(poller) == 41 and found == []  # primed: every folder's mtime, nothing suggested

    assert poller.poll() == 0

    (box / "loja-7" / "sub" / "new.jpg").write_bytes(b"x")
    _bump(box / "loja-7" / "sub")
    assert poller.poll() == 1 and found == [P("loja-7/sub/new.jpg")]
    assert poller.poll() == 1  # listed once more: a change in the same mtime granule is caught
    assert poller.poll() == 0


def test_new_folders_are_listed_and_the_daemons_own_never(box: Path,
                                                          found: list[PurePosixPath]) -> None:
    poller = FolderPoller(box, found.append)
    poller.prime()
    (box / "loja" / "deep").mkdir(parents=True)
    (box / "loja" / "deep" / "a.jpg").write_bytes(b"x")
    (box / "_processados" / "loja").mkdir(parents=True)
    (box / "_processados" / "loja" / "b.jpg").write_bytes(b"x")
    (box / "c.jpg.part").write_bytes(b"x")
    _bump(box)

    poller.poll()

    assert found == [P("loja/deep/a.jpg")]
    assert str(box / "_processados") not in poller._seen


def test_a_removed_folder_is_forgotten(box: Path, found: list[PurePosixPath]) -> None:
    (box / "loja").mkdir()
    poller = FolderPoller(box, found.append)
    poller.prime()
    (box / "loja").rmdir()
    poller.poll()
    assert len(poller) == 1


def test_an_unlisted_folder_costs_one_stat(box: Path, found: list[PurePosixPath],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(50):
        (box / f"loja-{n}").mkdir()
    poller = FolderPoller(box, found.append)
    poller.prime()
    calls: list[str] = []
    real_scandir = os.scandir

    def counting_scandir(path: str) -> object:
        calls.append(path)
        return real_scandir(path)

    monkeypatch.setattr(poll.os, "scandir", counting_scandir)
    for _ in range(5):
        poller.poll()
    assert calls == []
