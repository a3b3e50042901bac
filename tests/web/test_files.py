"""watcher/web/files.py: the only way the page reaches a file."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pytest

from watcher.web.files import Refused, image_type, read_inside, safe_rel


@pytest.mark.parametrize("name", ["", "/etc/passwd", "..", "a/../b", "./a", "a//b", "a/",
                                  ".thumbgen/http.json", "a/.hidden.jpg", "a\0b", "a\nb",
                                  "a\rb", "a\\..\\b"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(Refused):
        safe_rel(name)


def test_plain_names_pass() -> None:
    assert safe_rel("loja a/caneca (2).jpg") == PurePosixPath("loja a", "caneca (2).jpg")


def test_a_link_anywhere_on_the_way_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "real").mkdir(parents=True)
    outside.mkdir()
    (outside / "x.jpg").write_bytes(b"secret")
    (root / "real" / "x.jpg").write_bytes(b"ok")
    (root / "folder-link").symlink_to(outside)
    (root / "real" / "file-link.jpg").symlink_to(outside / "x.jpg")
    os.mkfifo(root / "real" / "pipe.jpg")

    assert read_inside(root, PurePosixPath("real/x.jpg"), 100)[0] == b"ok"
    for rel in ("folder-link/x.jpg", "real/file-link.jpg", "real/pipe.jpg"):
        with pytest.raises(Refused):
            read_inside(root, PurePosixPath(rel), 100)
    with pytest.raises(Refused):
        read_inside(root, PurePosixPath("real/x.jpg"), 1)  # over its cap


def test_content_types_come_from_the_bytes() -> None:
    assert image_type(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert image_type(b"\x89PNG\r\n\x1a\n....") == "image/png"
    assert image_type(b"RIFF\0\0\0\0WEBPVP8 ") == "image/webp"
    assert image_type(b"\0\0\0\x1cftypavif") == "image/avif"
    assert image_type(b"<svg onload=alert(1)>") is None
