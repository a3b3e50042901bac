"""Publish and reject on a real folder tree: a thumbnail is whole or absent, never written outside
its folder, and an input is moved, never overwritten or changed."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path, PurePosixPath

import pytest

from watcher.backup import is_own_temp
from watcher.stages.publish import archive_original, reject, write_atomic

PHOTO = (Path(__file__).parent.parent / "data" / "products" / "mugs.jpg").read_bytes()


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())


# -- write_atomic -----------------------------------------------------------------------------


def test_writes_the_file_in_mirrored_folders(tmp_path: Path) -> None:
    out = tmp_path / "out"

    path, replaced = write_atomic(out, PurePosixPath("sapatos/tenis/a.jpg"), b"new", "w1")

    assert path == out / "sapatos" / "tenis" / "a.jpg"
    assert path.read_bytes() == b"new"
    assert replaced is False
    assert _files(out) == ["sapatos/tenis/a.jpg"]  # no temp file left behind


def test_the_temp_file_is_hidden_in_the_final_folder(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    write_atomic(out, PurePosixPath("a/x.jpg"), b"old", "w1")
    seen: list[tuple[Path, bytes, bytes]] = []
    real_replace = os.replace

    def watching_replace(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        # the moment before the rename: the new bytes are complete, the old file still whole
        seen.append((Path(src), Path(src).read_bytes(), Path(dst).read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watching_replace)
    write_atomic(out, PurePosixPath("a/x.jpg"), b"new" * 1000, "w1")

    ((temp, temp_bytes, final_bytes),) = seen
    assert temp.parent == out / "a"  # same folder: the rename is atomic
    assert temp.name.startswith(".") and temp.name != "x.jpg"
    assert is_own_temp(temp.name)  # so cleanup removes it if we die before the rename
    assert (temp_bytes, final_bytes) == (b"new" * 1000, b"old")
    assert (out / "a" / "x.jpg").read_bytes() == b"new" * 1000


LIMIT = 4096

# The write runs in a child process whose file-size limit is tiny: writes past it fail with
# EFBIG, a full disk made deterministic. (In the test process itself the limit would also stop
# pytest writing its own output to a file.)
_CHILD = """
import resource, signal, sys
from pathlib import Path, PurePosixPath
from watcher.stages.publish import write_atomic
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    write_atomic(Path(sys.argv[1]), PurePosixPath(sys.argv[2]), b"x" * 3 * int(sys.argv[3]), "w1")
except OSError as exc:
    print(exc.errno)
else:
    print(0)
"""


def _write_past_the_limit(out: Path, rel: str) -> int:
    """errno of a write_atomic of 3 × LIMIT bytes under a LIMIT-byte file-size cap."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(out), rel, str(LIMIT)],
                          capture_output=True, text=True, timeout=60, check=True)
    return int(proc.stdout.strip())


def test_a_failed_write_leaves_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "out"

    assert _write_past_the_limit(out, "a/x.jpg") == errno.EFBIG
    assert _files(out) == []


def test_a_failed_write_keeps_the_old_thumbnail(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_atomic(out, PurePosixPath("x.jpg"), b"old", "w1")

    assert _write_past_the_limit(out, "x.jpg") == errno.EFBIG
    assert (out / "x.jpg").read_bytes() == b"old"
    assert _files(out) == ["x.jpg"]


def test_replacing_keeps_the_old_file_for_a_reader_who_has_it_open(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_atomic(out, PurePosixPath("x.jpg"), b"old thumbnail", "w1")

    with open(out / "x.jpg", "rb") as reader:
        path, replaced = write_atomic(out, PurePosixPath("x.jpg"), b"new thumbnail", "w2")
        assert reader.read() == b"old thumbnail"  # not truncated, not mixed

    assert replaced is True
    assert path.read_bytes() == b"new thumbnail"
    assert _files(out) == ["x.jpg"]


@pytest.mark.parametrize("rel", ["../x.jpg", "a/../../x.jpg", "/etc/x.jpg", "",
                                 "."])
def test_refuses_paths_that_leave_the_folder(tmp_path: Path, rel: str) -> None:
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(ValueError):
        write_atomic(out, PurePosixPath(rel), b"data", "w1")

    assert _files(tmp_path) == []


def test_refuses_to_write_through_a_planted_folder_link(tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "sapatos").symlink_to(elsewhere, target_is_directory=True)

    with pytest.raises(ValueError):
        write_atomic(out, PurePosixPath("sapatos/x.jpg"), b"data", "w1")

    assert list(elsewhere.iterdir()) == []


def test_a_link_at_the_final_name_is_replaced_not_followed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (out / "x.jpg").symlink_to(victim)

    path, _ = write_atomic(out, PurePosixPath("x.jpg"), b"thumbnail", "w1")

    assert not path.is_symlink()
    assert path.read_bytes() == b"thumbnail"
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize("tag", ["w1", "a-very-long-worker-id." * 4 + "x"])
def test_a_long_file_name_is_published(tmp_path: Path, tag: str) -> None:
    # the longest name a Linux folder holds: the temp name must not be longer
    name = "camiseta-algodão-" * 13 + "x" * 17 + ".jpg"
    assert len(os.fsencode(name)) == 255
    out = tmp_path / "out"

    path, _ = write_atomic(out, PurePosixPath(name), b"thumbnail", tag)

    assert path.read_bytes() == b"thumbnail"
    assert _files(out) == [name]


# -- archive_original -------------------------------------------------------------------------


def _claimed(tmp_path: Path, name: str, data: bytes) -> Path:
    claim = tmp_path / "claimed" / name
    claim.parent.mkdir(parents=True, exist_ok=True)
    claim.write_bytes(data)
    return claim


def test_archive_moves_the_original_unchanged(tmp_path: Path) -> None:
    processed = tmp_path / "_processados"
    claim = _claimed(tmp_path, "a.jpg", PHOTO)

    where = archive_original(claim, processed, PurePosixPath("sapatos/a.jpg"))

    assert where == processed / "sapatos" / "a.jpg"
    assert where.read_bytes() == PHOTO
    assert not claim.exists()


def test_archive_never_overwrites(tmp_path: Path) -> None:
    processed = tmp_path / "_processados"
    rel = PurePosixPath("sapatos/a.jpg")

    first = archive_original(_claimed(tmp_path, "a.jpg", b"first"), processed, rel)
    second = archive_original(_claimed(tmp_path, "a.jpg", b"second"), processed, rel)
    third = archive_original(_claimed(tmp_path, "a.jpg", b"third"), processed, rel)

    assert [first.name, second.name, third.name] == ["a.jpg", "a (2).jpg", "a (3).jpg"]
    assert [p.read_bytes() for p in (first, second, third)] == [b"first", b"second", b"third"]


def test_archive_refuses_a_planted_folder_link(tmp_path: Path) -> None:
    processed, elsewhere = tmp_path / "_processados", tmp_path / "elsewhere"
    processed.mkdir()
    elsewhere.mkdir()
    (processed / "sapatos").symlink_to(elsewhere, target_is_directory=True)
    claim = _claimed(tmp_path, "a.jpg", PHOTO)

    with pytest.raises(ValueError):
        archive_original(claim, processed, PurePosixPath("sapatos/a.jpg"))

    assert claim.read_bytes() == PHOTO  # still where it was, unharmed
    assert list(elsewhere.iterdir()) == []


# -- reject -----------------------------------------------------------------------------------


def _reject(tmp_path: Path, claim: Path, rel: str, **fields: str) -> Path:
    values = {"reason": "The file is empty (0 bytes); it may still have been uploading.",
              "kind": "empty", "stage": "validate", "error": "RejectedImage",
              "detail": "size 0", **fields}
    return reject(claim, tmp_path / "_falhas", PurePosixPath(rel), **values)


def test_reject_keeps_the_bytes_and_explains_beside_them(tmp_path: Path) -> None:
    claim = _claimed(tmp_path, "a.jpg", PHOTO)

    where = _reject(tmp_path, claim, "sapatos/a.jpg",
                    reason="The file is not a complete JPEG image (it may still have been "
                           "uploading).", error="RejectedImage",
                    detail="OSError: image file is truncated")

    assert where == tmp_path / "_falhas" / "sapatos" / "a.jpg"
    assert where.read_bytes() == PHOTO
    assert not claim.exists()
    lines = (where.parent / "a.jpg.erro.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == ("The file is not a complete JPEG image (it may still have been "
                        "uploading).")
    fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    assert fields["stage"] == "validate"
    assert fields["error"] == "RejectedImage"
    assert fields["detail"] == "OSError: image file is truncated"
    when = datetime.fromisoformat(fields["time"])
    assert when.tzinfo is not None and abs(when.timestamp() - datetime.now().timestamp()) < 60
    order = [next(i for i, line in enumerate(lines) if line.startswith(f"{key}: "))
             for key in ("stage", "error", "detail", "time")]
    assert order == sorted(order)
    assert _files(tmp_path / "_falhas") == ["sapatos/a.jpg", "sapatos/a.jpg.erro.txt"]


def test_a_second_reject_of_the_same_name_keeps_both_and_both_notes(tmp_path: Path) -> None:
    first = _reject(tmp_path, _claimed(tmp_path, "a.jpg", b"first"), "a.jpg", detail="one")
    second = _reject(tmp_path, _claimed(tmp_path, "a.jpg", b"second"), "a.jpg", detail="two")

    assert (first.read_bytes(), second.read_bytes()) == (b"first", b"second")
    assert "detail: one" in (tmp_path / "_falhas" / "a.jpg.erro.txt").read_text()
    assert "detail: two" in (tmp_path / "_falhas" / "a (2).jpg.erro.txt").read_text()


def test_the_note_shows_no_password_or_token_of_a_url_in_the_detail(tmp_path: Path) -> None:
    where = _reject(tmp_path, _claimed(tmp_path, "token=x.jpg", PHOTO), "token=x.jpg",
                    detail="http://user:p@Pw0rd-n@h.example/png?sig=Sg0-n refused it 1 times")

    note = (where.parent / "token=x.jpg.erro.txt").read_text()
    assert "detail: http://****@h.example/png?sig=**** refused it 1 times" in note
    assert "file: token=x.jpg" in note  # the shop's own file name is shown as it is


def test_reject_of_a_fifo_moves_it_without_opening_it(tmp_path: Path) -> None:
    claim = tmp_path / "claimed" / "x.jpg"
    claim.parent.mkdir()
    os.mkfifo(claim)

    where = _reject(tmp_path, claim, "x.jpg", reason="The file is a pipe (FIFO), not a photo.")

    assert where.is_fifo()
    assert (where.parent / "x.jpg.erro.txt").read_text().startswith("The file is a pipe")


def test_reject_of_the_longest_name_still_writes_a_note(tmp_path: Path) -> None:
    name = "x" * 251 + ".jpg"
    claim = _claimed(tmp_path, name, PHOTO)

    where = _reject(tmp_path, claim, name)

    assert where.read_bytes() == PHOTO
    notes = [p for p in where.parent.iterdir() if p.name.endswith(".erro.txt")]
    assert len(notes) == 1
    assert notes[0].read_text().startswith("The file is empty")
    assert notes[0].name.startswith("x" * 200)


def test_reject_of_a_name_that_is_not_utf8_still_writes_a_note(tmp_path: Path) -> None:
    # a Latin-1 name from an old Windows share: "camisa ç.jpg" in one byte per character
    name = os.fsdecode(b"camisa \xe7.jpg")
    claim = _claimed(tmp_path, name, PHOTO)

    where = _reject(tmp_path, claim, name, detail=f"cannot read {name}")

    assert where.read_bytes() == PHOTO
    note = (where.parent / (name + ".erro.txt")).read_bytes()
    assert note.startswith(b"The file is empty")
    assert b"file: camisa \xe7.jpg" in note  # the name as the folder shows it
