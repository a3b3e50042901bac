"""Rescans: every candidate input under the inbox, and nothing the daemon must leave alone."""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePosixPath

import pytest

from watcher import scan as scan_mod
from watcher.errors import RejectedImage
from watcher.scan import scan
from watcher.stages import validate


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def found(box: Path, start: Path | None = None) -> set[str]:
    return {str(rel) for rel in scan(box, start)}


def test_finds_files_at_any_depth(box: Path) -> None:
    for rel in ("a.jpg", "camisas/b.jpg", "camisas/azul/c.png", "x/y/z/w/d.webp",
                "sem extensão", "espaço e acento/ção.JPG"):
        touch(box / rel)

    assert found(box) == {"a.jpg", "camisas/b.jpg", "camisas/azul/c.png", "x/y/z/w/d.webp",
                          "sem extensão", "espaço e acento/ção.JPG"}
    assert all(isinstance(rel, PurePosixPath) for rel in scan(box))


def test_skips_the_daemons_folders_and_ignored_names(box: Path) -> None:
    touch(box / "keep.jpg")
    for rel in ("_processados/a.jpg", "_falhas/b.jpg", "_falhas/b.jpg.erro.txt",
                ".thumbgen/claimed/w/c.jpg", ".thumbgen/tmp/d", "sub/_rascunhos/e.jpg",
                "sub/.cache/f.jpg", "sub/g.jpg.part", "sub/h.crdownload", "sub/i.tmp",
                "sub/~$j.jpg", "sub/.~lock.k#", "sub/.DS_Store", "sub/Thumbs.db",
                "sub/desktop.ini", "sub/.hidden.jpg", "sub/_l.jpg"):
        touch(box / rel)

    assert found(box) == {"keep.jpg"}


def test_does_not_descend_a_linked_folder_but_yields_links_and_fifos(box: Path,
                                                                     tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    touch(elsewhere / "secret.jpg")
    touch(box / "real.jpg")
    os.symlink(elsewhere, box / "linked-folder")
    os.symlink(elsewhere / "secret.jpg", box / "link.jpg")
    os.symlink(box / "loop", box / "loop")  # a link to itself
    os.mkfifo(box / "fifo.jpg")

    assert found(box) == {"real.jpg", "linked-folder", "link.jpg", "loop", "fifo.jpg"}


@pytest.mark.timeout(10)
@pytest.mark.parametrize("name", ["linked-folder", "link.jpg", "fifo.jpg", "loop"])
def test_validation_rejects_what_the_scan_yields_without_hanging(box: Path, tmp_path: Path,
                                                                  name: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    touch(elsewhere / "secret.jpg")
    os.symlink(elsewhere, box / "linked-folder")
    os.symlink(elsewhere / "secret.jpg", box / "link.jpg")
    os.symlink(box / "loop", box / "loop")
    os.mkfifo(box / "fifo.jpg")

    with pytest.raises(RejectedImage):
        validate.read_input(box / name, 10 * 1024**2)


def test_start_scans_one_folder_with_inbox_relative_paths(box: Path) -> None:
    touch(box / "a.jpg")
    touch(box / "novo" / "b.jpg")
    touch(box / "novo" / "fundo" / "c.jpg")

    assert found(box, box / "novo") == {"novo/b.jpg", "novo/fundo/c.jpg"}


def test_a_missing_inbox_or_start_yields_nothing(box: Path, tmp_path: Path) -> None:
    assert found(tmp_path / "nope") == set()
    assert found(box, box / "gone") == set()
    touch(box / "file.jpg")
    assert found(box, box / "file.jpg") == set()


def test_an_unreadable_folder_does_not_stop_the_scan(box: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A share answers ESTALE (or EIO) for one folder: the rest is still scanned."""
    touch(box / "a.jpg")
    touch(box / "stale" / "b.jpg")
    touch(box / "fine" / "c.jpg")
    real_scandir = os.scandir

    def flaky_scandir(path: str | os.PathLike[str]) -> object:
        if Path(path).name == "stale":
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), str(path))
        return real_scandir(path)

    monkeypatch.setattr(scan_mod.os, "scandir", flaky_scandir)

    assert found(box) == {"a.jpg", "fine/c.jpg"}
