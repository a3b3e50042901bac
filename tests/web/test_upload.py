"""watcher/web/upload.py with real multipart bodies (built by httpx, parsed by python-multipart)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import httpx
import pytest

from watcher.web import upload
from watcher.web.files import Refused

PHOTO = Path(__file__).resolve().parent.parent / "data" / "products" / "mugs.jpg"


def body(data: dict[str, str], files: list[tuple[str, bytes]]) -> tuple[bytes, bytes]:
    request = httpx.Request("POST", "http://x/enviar", data=data,
                            files=[("fotos", (name, content, "image/jpeg"))
                                   for name, content in files])
    boundary = request.headers["content-type"].split("boundary=")[1].encode()
    return boundary, request.read()


def receive(tmp: Path, data: dict[str, str], files: list[tuple[str, bytes]],
            max_file_bytes: int = 1 << 20, max_files: int = 5) -> upload.Receiver:
    (tmp / "temp").mkdir(exist_ok=True)
    boundary, raw = body(data, files)
    receiver = upload.Receiver(boundary, tmp / "temp", max_file_bytes=max_file_bytes,
                               max_files=max_files, formats=("jpeg", "png", "webp"),
                               token_ok=lambda t: t == "good")
    for start in range(0, len(raw), 1000):  # as it would arrive
        receiver.feed(raw[start:start + 1000])
    receiver.finish()
    return receiver


def test_photos_are_kept_and_the_rest_refused_with_nothing_left(tmp_path: Path) -> None:
    photo = PHOTO.read_bytes()
    receiver = receive(tmp_path, {"csrf": "good", "pasta": "loja"},
                       [("a.jpg", photo), ("b.jpg", b"GIF89a not ours"), ("c.jpg", photo * 20),
                        ("../../etc/d.jpg", photo), (".e.jpg", photo), ("", b"")],
                       max_file_bytes=len(photo) * 2)

    assert [name for name, _ in receiver.accepted] == ["a.jpg", "d.jpg"]
    assert [key for key, _ in receiver.refused] == ["refused_type", "refused_size",
                                                    "refused_name"]
    assert receiver.fields["pasta"] == "loja"
    assert sorted(p.read_bytes() == photo for p in (tmp_path / "temp").iterdir()) == [True, True]


def test_a_name_taken_in_the_inbox_gets_2(tmp_path: Path) -> None:
    inbox = tmp_path / "produtos"
    (inbox / "loja").mkdir(parents=True)
    (inbox / "loja" / "a.jpg").write_bytes(b"earlier")
    receiver = receive(tmp_path, {"csrf": "good"}, [("a.jpg", PHOTO.read_bytes())])

    placed = upload.publish(receiver.accepted, inbox, PurePosixPath("loja"))

    assert placed == [PurePosixPath("loja/a (2).jpg")]
    assert (inbox / "loja" / "a.jpg").read_bytes() == b"earlier"
    assert not list((tmp_path / "temp").iterdir())


def test_photos_before_a_good_token_stop_the_upload(tmp_path: Path) -> None:
    with pytest.raises(upload.Abort):
        receive(tmp_path, {"csrf": "bad"}, [("a.jpg", PHOTO.read_bytes())])
    with pytest.raises(upload.Abort) as too_many:
        receive(tmp_path, {"csrf": "good"}, [("a.jpg", b"x")] * 3, max_files=2)
    assert too_many.value.message == ("refused_count", {"count": 2})


@pytest.mark.parametrize("folder", ["_falhas", ".thumbgen", "a/b", "..", "a\\b", "a\nb"])
def test_a_shop_folder_is_one_plain_name(folder: str) -> None:
    with pytest.raises(Refused):
        upload.shop_folder(folder)
    assert upload.shop_folder(" loja-a ") == PurePosixPath("loja-a")
    assert upload.shop_folder("") == PurePosixPath()
