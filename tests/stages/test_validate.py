"""Validate on real files: what is refused before reading, what is refused before decoding, and
what a good photo of any odd kind looks like once decoded (upright, 8-bit, sRGB, alpha kept)."""

from __future__ import annotations

import functools
import io
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageCms, ImageStat

from watcher.errors import REJECT_KINDS, RejectedImage
from watcher.stages.validate import Limits, decode, read_input

DATA = Path(__file__).parent.parent / "data"
HOSTILE = sorted((DATA / "hostile").iterdir())
MIB = 1024**2
OUTPUT = (1200, 1200)
LIMITS = Limits(10 * MIB, 40_000_000, ("jpeg", "png", "webp"), OUTPUT)
# a small output makes JPEGs draft to 1/4: the orientation tests stay fast
SMALL = Limits(10 * MIB, 40_000_000, ("jpeg", "png", "webp"), (300, 300))


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def _rejected(data: bytes, limits: Limits = LIMITS) -> RejectedImage:
    with pytest.raises(RejectedImage) as info:
        decode(data, limits)
    return info.value


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _grey_png(width: int, height: int, idat: bytes) -> bytes:
    """A PNG of 8-bit grey with the given IDAT payload: the header is all a bomb needs."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


@functools.cache
def _black_png_bomb(side: int) -> bytes:
    """A valid ``side``×``side`` black PNG: well under a MB that inflates to side² bytes."""
    packer = zlib.compressobj(1)  # the fastest level: building the bomb must stay cheap
    rows = b"\x00" * ((side + 1) * 100)  # 100 rows of filter byte + pixels
    idat = b"".join(packer.compress(rows) for _ in range(side // 100)) + packer.flush()
    return _grey_png(side, side, idat)


# -- read_input: what is refused before a byte is decoded -------------------------------------


def _read_in_thread(path: Path, max_bytes: int = 10 * MIB) -> BaseException | bytes:
    """read_input in a thread, so a hang fails the test instead of stopping the suite."""
    result: list[BaseException | bytes] = []

    def run() -> None:
        try:
            result.append(read_input(path, max_bytes))
        except BaseException as exc:  # the test inspects whatever happened
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), f"read_input({path.name}) hung"
    return result[0]


def test_reads_a_regular_file_byte_for_byte(tmp_path: Path) -> None:
    src = DATA / "products" / "mugs.jpg"
    path = tmp_path / "mugs.jpg"
    path.write_bytes(src.read_bytes())

    assert read_input(path, 10 * MIB) == src.read_bytes()


def test_refuses_a_symlink_even_to_a_good_photo(tmp_path: Path) -> None:
    target = tmp_path / "real.jpg"
    target.write_bytes((DATA / "products" / "mugs.jpg").read_bytes())
    link = tmp_path / "link.jpg"
    link.symlink_to(target)

    result = _read_in_thread(link)

    assert isinstance(result, RejectedImage)
    assert "link" in result.reason


def test_refuses_a_fifo_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)

    result = _read_in_thread(fifo)  # nobody ever writes: a blocking open would never return

    assert isinstance(result, RejectedImage)
    assert "FIFO" in result.reason


def test_refuses_a_device(tmp_path: Path) -> None:
    result = _read_in_thread(Path("/dev/null"))

    assert isinstance(result, RejectedImage)
    assert "special file" in result.reason


def test_refuses_a_hard_link(tmp_path: Path) -> None:
    first = tmp_path / "a.jpg"
    first.write_bytes((DATA / "products" / "mugs.jpg").read_bytes())
    os.link(first, tmp_path / "b.jpg")

    for path in (first, tmp_path / "b.jpg"):
        result = _read_in_thread(path)
        assert isinstance(result, RejectedImage)
        assert "hard link" in result.reason


def test_refuses_files_over_the_size_limit_and_accepts_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    path.write_bytes(b"\xff\xd8\xff" + b"\0" * 997)  # exactly 1000 bytes

    assert len(read_input(path, 1000)) == 1000
    result = _read_in_thread(path, max_bytes=999)
    assert isinstance(result, RejectedImage)
    assert result.reason.startswith("The file is too large")


def test_refuses_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()

    result = _read_in_thread(path)

    assert isinstance(result, RejectedImage)
    assert "empty" in result.reason


# -- decode: the format by content ------------------------------------------------------------


def test_a_png_named_jpg_is_decoded_as_png(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(_encode(Image.new("RGB", (40, 30), "blue"), "PNG"))

    photo = decode(read_input(path, 10 * MIB), LIMITS)

    assert photo.format == "png"
    assert photo.image.size == (40, 30)
    assert photo.image.getpixel((20, 15)) == (0, 0, 255)


def test_a_webp_is_decoded() -> None:
    photo = decode(_encode(Image.new("RGB", (40, 30), "red"), "WEBP", lossless=True), LIMITS)

    assert photo.format == "webp"
    assert photo.image.getpixel((0, 0)) == (255, 0, 0)


def test_a_gif_named_jpg_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(_encode(Image.new("RGB", (40, 30), "blue"), "GIF"))

    reason = _rejected(read_input(path, 10 * MIB)).reason

    assert reason == "The file is not a photo in a supported format (JPEG, PNG, WebP)."


def test_a_text_file_is_rejected() -> None:
    assert "not a photo" in _rejected(b"<?php echo 'hello'; ?>\n").reason


def test_allowed_formats_are_respected() -> None:
    jpeg_only = Limits(10 * MIB, 40_000_000, ("jpeg",), OUTPUT)
    png = _encode(Image.new("RGB", (40, 30), "blue"), "PNG")

    reason = _rejected(png, jpeg_only).reason

    assert reason == "PNG files are not accepted here (accepted: JPEG)."
    assert decode(_encode(Image.new("RGB", (40, 30)), "JPEG"), jpeg_only).format == "jpeg"


# -- decode: pixels capped before decoding ----------------------------------------------------


def test_pixels_are_capped_before_decoding() -> None:
    # a header that claims 8000×8000 and data that is not an image at all: the refusal must be
    # about the size, which proves nothing was decoded
    fake = _grey_png(8000, 8000, zlib.compress(b"not pixels"))

    reason = _rejected(fake).reason

    assert reason == "The image is too large (8000×8000 pixels); the limit is 40 megapixels."


def test_max_pixels_is_the_configured_limit() -> None:
    data = _encode(Image.new("RGB", (100, 100)), "PNG")

    assert "limit is 0 megapixels" in _rejected(data, Limits(MIB, 9_999, ("png",), OUTPUT)).reason
    assert decode(data, Limits(MIB, 10_000, ("png",), OUTPUT)).image.size == (100, 100)


@pytest.mark.parametrize("max_pixels", [40_000_000, 10**10])
def test_a_png_decompression_bomb_is_rejected_quickly(max_pixels: int) -> None:
    bomb = _black_png_bomb(10_000)  # 100 MP of black in ~400 KB
    assert len(bomb) < 1 * MIB
    limits = Limits(10 * MIB, max_pixels, ("png",), OUTPUT)

    start = time.perf_counter()
    error = _rejected(bomb, limits)

    # with our limit raised, Pillow's own bomb warning is made an error
    assert "pixels" in error.reason
    assert time.perf_counter() - start < 1.0


# -- decode: truncated and corrupt files ------------------------------------------------------


def test_a_truncated_jpeg_is_rejected_in_plain_words() -> None:
    error = _rejected((DATA / "hostile" / "truncated_jpeg.jpg").read_bytes())

    assert error.reason == ("The file is not a complete JPEG image (it may still have been "
                            "uploading).")
    assert error.kind == "incomplete"


def test_a_half_uploaded_photo_is_rejected_not_decoded_grey() -> None:
    whole = (DATA / "products" / "mugs.jpg").read_bytes()

    error = _rejected(whole[: len(whole) // 2])

    assert error.reason == ("The file is not a complete JPEG image (it may still have been "
                            "uploading).")


def test_a_truncated_png_is_rejected_in_plain_words() -> None:
    error = _rejected((DATA / "hostile" / "truncated_image.png").read_bytes())

    assert error.reason == ("The file is not a complete PNG image (it may still have been "
                            "uploading).")


@pytest.mark.parametrize("path", HOSTILE, ids=[p.name for p in HOSTILE])
def test_every_hostile_file_decodes_or_is_rejected(path: Path) -> None:
    data = read_input(path, 10 * MIB)
    try:
        photo = decode(data, LIMITS)
    except RejectedImage as exc:
        assert exc.reason.endswith(".") and "\n" not in exc.reason
        assert exc.kind in REJECT_KINDS
        return
    assert photo.image.mode in ("RGB", "RGBA")
    photo.image.load()
    assert max(photo.image.size) <= 2 * max(OUTPUT)


@pytest.mark.parametrize("name", [p.name for p in HOSTILE if p.name.startswith("x")]
                         + ["broken.png", "decompression_bomb.gif", "png_decompression_dos.png"])
def test_known_corrupt_files_are_rejected(name: str) -> None:
    _rejected((DATA / "hostile" / name).read_bytes())


# -- decode: the picture comes out right -----------------------------------------------------


def _distance(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two images reduced to 48×48, 0..255."""
    small = (48, 48)
    diff = ImageChops.difference(a.convert("RGB").resize(small), b.convert("RGB").resize(small))
    return sum(ImageStat.Stat(diff).mean) / 3


@pytest.mark.parametrize("kind", ["Landscape", "Portrait"])
def test_all_exif_orientations_come_out_upright(kind: str) -> None:
    upright = decode((DATA / "exif" / f"{kind}_1.jpg").read_bytes(), SMALL).image
    with Image.open(DATA / "exif" / f"{kind}_3.jpg") as stored:
        # the metric tells a wrong orientation apart: tag 3 is stored upside down
        assert _distance(upright, stored) > 20

    for n in (0, 2, 3, 4, 5, 6, 7, 8):
        image = decode((DATA / "exif" / f"{kind}_{n}.jpg").read_bytes(), SMALL).image
        assert image.size == upright.size, n
        assert _distance(upright, image) < 3, n


def test_exif_orientation_from_an_imagemagick_png_profile_is_applied() -> None:
    path = DATA / "hostile" / "exif_imagemagick_orientation.png"
    with Image.open(path) as im:
        assert im.getexif()[0x0112] == 3
        stored = im.convert("RGB")

    image = decode(path.read_bytes(), LIMITS).image

    assert _distance(image, stored.rotate(180)) < 1
    assert _distance(image, stored) > 5


def _tiff_with_string_orientation(value: bytes) -> bytes:
    """An EXIF block whose Orientation tag is ASCII (Pillow refuses to write one)."""
    entry = struct.pack(">HHII", 0x0112, 2, len(value), 26)  # tag, ASCII, count, offset
    return (b"Exif\x00\x00MM\x00\x2a" + struct.pack(">IH", 8, 1) + entry + struct.pack(">I", 0)
            + value)


def test_a_string_exif_orientation_is_ignored_not_fatal() -> None:
    image = Image.new("RGB", (60, 40), "red")
    data = _encode(image, "JPEG", exif=_tiff_with_string_orientation(b"<?php\0"))
    with Image.open(io.BytesIO(data)) as check:
        assert check.getexif()[0x0112] == "<?php"

    photo = decode(data, LIMITS)

    assert photo.image.size == (60, 40)


def test_cmyk_comes_out_red_in_the_upper_left() -> None:
    photo = decode((DATA / "hostile" / "pil_sample_cmyk.jpg").read_bytes(), LIMITS)

    assert photo.image.mode == "RGB"
    r, g, b = photo.image.getpixel((2, 2))
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("name", ["basn0g16.png", "basn2c16.png", "basn6a16.png"])
def test_16_bit_pngs_keep_their_tones(name: str) -> None:
    photo = decode((DATA / "pngsuite" / name).read_bytes(), LIMITS)

    rgb = photo.image.convert("RGB")
    assert rgb.getextrema() == ((0, 255), (0, 255), (0, 255))
    assert ImageStat.Stat(rgb.convert("L")).stddev[0] > 30  # a gradient, not a white field


def test_16_bit_grey_ramp_keeps_its_tones() -> None:
    ramp = Image.new("I;16", (256, 4))
    ramp.putdata([x * 257 for x in range(256)] * 4)  # 0..65535 left to right
    data = _encode(ramp, "PNG")

    image = decode(data, LIMITS).image

    assert image.getpixel((0, 2)) == (0, 0, 0)
    assert image.getpixel((128, 2)) == (128, 128, 128)
    assert image.getpixel((255, 2)) == (255, 255, 255)


@pytest.mark.parametrize("folder, name", [
    ("hostile", "pil123p.png"),         # palette + tRNS
    ("hostile", "l_trns.png"),          # grey + tRNS key
    ("hostile", "i_trns.png"),          # 16-bit grey + tRNS key
    ("hostile", "rgb_trns.png"),        # RGB + tRNS key
    ("hostile", "uncompressed_la.png"),  # grey + alpha
    ("pngsuite", "basn4a08.png"),       # grey + alpha
    ("pngsuite", "tbrn2c08.png"),       # RGB + tRNS
])
def test_transparency_is_kept(folder: str, name: str) -> None:
    path = DATA / folder / name
    with Image.open(path) as im:
        expected = im.convert("RGBA").getchannel("A")
    assert expected.getextrema()[0] < 255  # the file really has transparent pixels

    photo = decode(path.read_bytes(), LIMITS)

    assert photo.image.mode == "RGBA"
    assert ImageChops.difference(photo.image.getchannel("A"), expected).getbbox() is None


def _profile_with_red_and_green_swapped() -> bytes:
    """An sRGB ICC profile whose first channel is green and second red."""
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    count = struct.unpack(">I", icc[128:132])[0]
    where = {bytes(icc[132 + 12 * i:136 + 12 * i]): 136 + 12 * i for i in range(count)}
    r, g = where[b"rXYZ"], where[b"gXYZ"]
    icc[r:r + 8], icc[g:g + 8] = icc[g:g + 8], icc[r:r + 8]
    return bytes(icc)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_an_icc_tagged_image_is_converted_to_srgb(fmt: str) -> None:
    # stored as (255, 0, 0), which under its own profile means full green
    data = _encode(Image.new("RGB", (20, 20), (255, 0, 0)), fmt,
                   icc_profile=_profile_with_red_and_green_swapped())

    r, g, b = decode(data, LIMITS).image.getpixel((10, 10))

    assert r < 10 and g > 245 and b < 10


def test_an_icc_tagged_cutout_keeps_its_alpha() -> None:
    image = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    image.paste((255, 0, 0, 255), (5, 5, 15, 15))
    data = _encode(image, "PNG", icc_profile=_profile_with_red_and_green_swapped())

    photo = decode(data, LIMITS)

    assert photo.image.mode == "RGBA"
    assert photo.image.getpixel((0, 0))[3] == 0
    r, g, b, a = photo.image.getpixel((10, 10))
    assert (a, r < 10, g > 245) == (255, True, True)


def test_a_broken_icc_profile_is_not_fatal() -> None:
    data = _encode(Image.new("RGB", (20, 20), "blue"), "PNG", icc_profile=b"not a profile")

    assert decode(data, LIMITS).image.getpixel((5, 5)) == (0, 0, 255)


def test_an_opaque_alpha_channel_is_dropped() -> None:
    photo = decode(_encode(Image.new("RGBA", (20, 20), (1, 2, 3, 255)), "PNG"), LIMITS)

    assert photo.image.mode == "RGB"
    assert photo.has_alpha is False


# -- decode: working scale --------------------------------------------------------------------
# What _draft_size and _working_scale guarantee together: a photo whose long side is at least
# the output's is decoded with its long side between the output's and twice the output's, its
# aspect kept; a smaller photo is never enlarged. JPEG gets there by drafting (the decoder scales
# by 1/2, 1/4, 1/8), so a 4000×3000 photo is decoded at exactly half size.


def _jpeg(size: tuple[int, int]) -> bytes:
    return _encode(Image.new("RGB", size, "teal"), "JPEG", quality=60)


@pytest.mark.parametrize("size", [(4000, 3000), (3000, 4000), (6000, 1000), (9000, 4000),
                                  (2500, 2500), (1300, 1250)])
def test_a_large_jpeg_is_decoded_between_output_size_and_twice_that(size: tuple[int, int]) -> None:
    photo = decode(_jpeg(size), LIMITS)

    w, h = photo.image.size
    assert photo.original_size == size
    assert max(OUTPUT) <= max(w, h) <= 2 * max(OUTPUT)
    assert abs(w / h - size[0] / size[1]) < 0.01 * size[0] / size[1]


def test_a_4000_by_3000_jpeg_is_drafted_to_half() -> None:
    start = time.perf_counter()
    photo = decode(_jpeg((4000, 3000)), LIMITS)

    assert photo.image.size == (2000, 1500)  # 1/2 while decoding; no resize after
    assert time.perf_counter() - start < 1.0


def test_a_rotated_jpeg_keeps_enough_pixels_for_a_wide_output() -> None:
    # stored 3000×4000 with orientation 6 (turned to 4000×3000), output 1200×600
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(Image.new("RGB", (3000, 4000), "teal"), "JPEG", exif=exif.tobytes(),
                   quality=60)

    image = decode(data, Limits(10 * MIB, 40_000_000, ("jpeg",), (1200, 600))).image

    assert image.size[0] > image.size[1]
    assert image.size[0] >= 1200 and image.size[1] >= 600


def test_a_small_photo_is_never_enlarged() -> None:
    assert decode(_jpeg((640, 480)), LIMITS).image.size == (640, 480)


def test_a_large_png_is_reduced_to_twice_the_output() -> None:
    data = _encode(Image.new("RGB", (5000, 2500), "green"), "PNG", compress_level=1)

    image = decode(data, LIMITS).image

    assert image.size == (2400, 1200)


def test_exif_rotation_is_applied_after_scaling() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = Image.new("RGB", (4000, 2000), "white")
    stored.paste((255, 0, 0), (0, 0, 400, 400))  # red in the stored top-left
    data = _encode(stored, "JPEG", exif=exif.tobytes(), quality=90)

    image = decode(data, LIMITS).image

    assert image.size == (1200, 2400)
    # orientation 6 turns the picture clockwise: the stored top-left ends up top-right
    r, g, b = image.getpixel((image.size[0] - 5, 5))
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("size", [(3000, 2000), (2000, 3000), (2999, 1001), (4700, 37)])
def test_the_working_copy_is_the_whole_photo_resized_without_seams(size: tuple[int, int]) -> None:
    # a real photo just over twice the output, resized a band of rows at a time: no seams where
    # the bands meet, every pixel within one level of resizing it whole (where a band's edge
    # falls between source rows, the filter's weights round differently in the last bit)
    with Image.open(DATA / "products" / "mugs.jpg") as photo:
        source = photo.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    data = _encode(source, "PNG", compress_level=1)

    image = decode(data, LIMITS).image

    scale = 2 * max(OUTPUT) / max(size)
    whole = source.resize((max(1, round(size[0] * scale)), max(1, round(size[1] * scale))),
                          Image.Resampling.BILINEAR)
    assert image.size == whole.size
    assert max(high for _, high in ImageChops.difference(image, whole).getextrema()) <= 1


def test_an_icc_tagged_photo_resized_to_working_scale_is_converted_once() -> None:
    # the working copy is converted to sRGB in place: the result must equal the copy converted
    source = Image.new("RGB", (3000, 2000), (200, 40, 90))
    source.paste((30, 180, 60), (0, 0, 1500, 1000))
    icc = _profile_with_red_and_green_swapped()
    data = _encode(source, "PNG", icc_profile=icc, compress_level=1)

    image = decode(data, LIMITS).image

    assert image.size == (2400, 1600)
    r, g, b = image.getpixel((2000, 1500))
    assert (r, g) == pytest.approx((40, 200), abs=3)  # red and green swapped by the profile
    r, g, b = image.getpixel((100, 100))
    assert (r, g) == pytest.approx((180, 30), abs=3)
