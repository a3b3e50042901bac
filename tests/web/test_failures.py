"""watcher/web/failures.py: listing the notes, and sending a photo back."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from watcher.web.failures import Failures
from watcher.web.files import Refused


def tree(tmp_path: Path) -> Failures:
    inbox = tmp_path / "produtos"
    failed = inbox / "_falhas"
    (failed / "loja").mkdir(parents=True)
    (failed / "loja" / "a.jpg").write_bytes(b"photo")
    (failed / "loja" / "a.jpg.erro.txt").write_text("Primeira.\nSegunda.\n\nfile: loja/a.jpg\n")
    return Failures(failed, inbox)


def test_the_notes_are_listed_with_their_two_lines(tmp_path: Path) -> None:
    failures = tree(tmp_path)
    listed, total = failures.listing()
    assert [f.rel for f in listed] == ["loja/a.jpg"] and total == 1
    assert failures.lines("loja/a.jpg") == ("Primeira.", "Segunda.")


def test_sending_back_never_overwrites_and_removes_the_note(tmp_path: Path) -> None:
    failures = tree(tmp_path)
    (tmp_path / "produtos" / "loja").mkdir()
    (tmp_path / "produtos" / "loja" / "a.jpg").write_bytes(b"newer")

    where = failures.retry(PurePosixPath("loja/a.jpg"))

    assert where == PurePosixPath("loja/a (2).jpg")
    assert (tmp_path / "produtos" / "loja" / "a.jpg").read_bytes() == b"newer"
    assert (tmp_path / "produtos" / where).read_bytes() == b"photo"
    assert not (tmp_path / "produtos" / "_falhas" / "loja" / "a.jpg.erro.txt").exists()
    assert failures.listing() == ([], 0)
    with pytest.raises(FileNotFoundError):
        failures.retry(PurePosixPath("loja/a.jpg"))


def test_a_link_in_the_inbox_is_not_followed(tmp_path: Path) -> None:
    failures = tree(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "produtos" / "loja").symlink_to(elsewhere)

    with pytest.raises(Refused):
        failures.retry(PurePosixPath("loja/a.jpg"))
    assert not list(elsewhere.iterdir())
    with pytest.raises(Refused):
        failures.retry(PurePosixPath("loja/a.jpg.erro.txt"))
