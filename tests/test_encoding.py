"""The PNG writer of our own: every pixel read back as written, by Pillow's reader (which checks
every chunk's CRC), in each mode it writes, across its strips, at sizes from 1×1 up; and files no
bigger than Pillow's own at the same deflate level."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from watcher import encoding

PRODUCTS = Path(__file__).resolve().parent / "data" / "products"


def _photo(name: str = "caps_cap_03.jpg") -> Image.Image:
    with Image.open(PRODUCTS / name) as image:
        return image.convert("RGB")


def _cut_out(photo: Image.Image) -> Image.Image:
    """A cut-out as compose.cutout makes one: an alpha with a soft edge, RGB zero where alpha is."""
    rgb = np.asarray(photo)
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    distance = np.hypot((yy - h / 2) / (h / 3), (xx - w / 2) / (w / 3))
    alpha = np.clip((1.1 - distance) * 800, 0, 255).astype(np.uint8)
    rgba = np.dstack([rgb * (alpha[..., None] > 0), alpha]).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")


def _read(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG"
    return image


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L", "LA"])
def test_every_pixel_is_read_back_as_written(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoding, "_STRIP_BYTES", 50_000)  # many strips: the Up filter across them
    monkeypatch.setattr(encoding, "_IDAT_BYTES", 40_000)  # and many IDAT chunks
    picture = _cut_out(_photo()).convert(mode)
    back = _read(encoding.png(picture))
    assert (back.mode, back.size) == (picture.mode, picture.size)
    assert np.array_equal(np.asarray(back), np.asarray(picture))  # (RGB is 0 where alpha is)


@pytest.mark.parametrize("size", [(1, 1), (1, 9), (9, 1), (3, 7), (257, 5)])
def test_tiny_and_odd_sizes(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    pixels = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    pixels[0, 0, 3] = 0  # one fully transparent pixel at least
    picture = Image.fromarray(pixels, "RGBA")
    pixels[pixels[..., 3] == 0] = 0  # stored as (0, 0, 0, 0)
    assert np.array_equal(np.asarray(_read(encoding.png(picture))), pixels)


def test_the_file_is_a_plain_png_with_valid_chunks() -> None:
    picture = _cut_out(_photo()).resize((300, 200))
    data = encoding.png(picture)
    assert data.startswith(encoding.PNG_SIGNATURE)
    at, kinds = len(encoding.PNG_SIGNATURE), []
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        body = data[at + 8:at + 8 + length]
        (crc,) = struct.unpack(">I", data[at + 8 + length:at + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        kinds.append(kind)
        at += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and set(kinds[1:-1]) == {b"IDAT"}
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    assert (width, height, depth, colour, interlace) == (300, 200, 8, 6, 0)


@pytest.mark.parametrize("name", ["caps_cap_03.jpg", "dresses_dress_02.jpg", "books.jpg"])
def test_a_cut_out_is_no_bigger_than_pillows_own(name: str) -> None:
    picture = _cut_out(_photo(name))
    pillows = io.BytesIO()
    picture.save(pillows, "PNG", compress_level=encoding.PNG_LEVEL)
    assert len(encoding.png(picture)) <= 1.1 * len(pillows.getvalue())


def test_a_fully_transparent_pixel_is_stored_as_zero_and_no_other_is_touched() -> None:
    photo = np.asarray(_photo().resize((200, 150)))
    alpha = np.zeros(photo.shape[:2], np.uint8)
    alpha[30:120, 40:160] = 255
    alpha[30:120, 40:50] = 1  # barely seen: its colour is kept
    picture = Image.fromarray(np.dstack([photo, alpha]), "RGBA")
    back = np.asarray(_read(encoding.png(picture)))
    seen = alpha > 0
    assert np.array_equal(back[seen], np.asarray(picture)[seen])
    assert not back[~seen].any()


def test_other_modes_go_through_pillow() -> None:
    picture = _photo().convert("P")
    back = _read(encoding.png(picture))
    assert back.mode == "P" and np.array_equal(np.asarray(back), np.asarray(picture))


def test_encode_writes_png_outputs_with_the_writer() -> None:
    class Spec:
        format, quality = "png", 90

    picture = _cut_out(_photo()).resize((64, 48))
    assert encoding.encode(picture, Spec()) == encoding.png(picture)
