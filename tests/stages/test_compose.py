"""Compose on real images: which background a folder gets, where the product lands on the canvas
and how big it is, measured in the output the shop will upload."""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePosixPath

import pytest
from PIL import Image, ImageChops

from watcher.encoding import encode
from watcher.errors import RejectedImage
from watcher.stages.compose import (
    Backgrounds, Output, compose, cutout, find_background, output_rel)

RED = (200, 20, 20)
WHITE = (255, 255, 255)


def _image(path: Path, colour: tuple[int, int, int] = (0, 128, 0),
           size: tuple[int, int] = (40, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


# -- find_background: the rule of SPEC §2 -----------------------------------------------------


def _find(folder: Path, rel: str) -> str | None:
    found = find_background(folder, PurePosixPath(rel))
    return None if found is None else found.relative_to(folder).as_posix()


def test_a_file_named_after_the_subfolder(tmp_path: Path) -> None:
    _image(tmp_path / "sapatos.png")
    _image(tmp_path / "default.jpg")

    assert _find(tmp_path, "sapatos/tenis.jpg") == "sapatos.png"


def test_a_file_inside_the_subfolders_folder(tmp_path: Path) -> None:
    _image(tmp_path / "sapatos" / "praia.jpg")
    _image(tmp_path / "default.jpg")

    assert _find(tmp_path, "sapatos/tenis.jpg") == "sapatos/praia.jpg"


def test_the_deepest_folder_wins(tmp_path: Path) -> None:
    _image(tmp_path / "sapatos.jpg")
    _image(tmp_path / "sapatos" / "tenis.webp")
    _image(tmp_path / "sapatos" / "tenis" / "quadra" / "fundo.png")

    assert _find(tmp_path, "sapatos/tenis/corrida/a.jpg") == "sapatos/tenis.webp"
    assert _find(tmp_path, "sapatos/tenis/quadra/a.jpg") == "sapatos/tenis/quadra/fundo.png"
    assert _find(tmp_path, "sapatos/botas/a.jpg") == "sapatos.jpg"


def test_default_when_the_subfolder_has_none(tmp_path: Path) -> None:
    _image(tmp_path / "default.jpeg")
    _image(tmp_path / "sapatos.jpg")

    assert _find(tmp_path, "roupas/camisa.jpg") == "default.jpeg"
    assert _find(tmp_path, "camisa.jpg") == "default.jpeg"


def test_the_only_image_when_there_is_no_default(tmp_path: Path) -> None:
    _image(tmp_path / "estudio.jpg")
    (tmp_path / "README.txt").write_text("backgrounds go here")
    (tmp_path / "vazio").mkdir()

    assert _find(tmp_path, "camisa.jpg") == "estudio.jpg"
    assert _find(tmp_path, "roupas/camisa.jpg") == "estudio.jpg"


def test_white_when_the_choice_is_not_clear(tmp_path: Path) -> None:
    _image(tmp_path / "estudio.jpg")
    _image(tmp_path / "praia.jpg")

    assert _find(tmp_path, "camisa.jpg") is None
    assert _find(tmp_path / "missing", "camisa.jpg") is None


def test_hidden_files_links_and_other_files_are_not_backgrounds(tmp_path: Path) -> None:
    outside = _image(tmp_path / "outside" / "secret.jpg")
    backgrounds = tmp_path / "backgrounds"
    _image(backgrounds / ".default.jpg")
    (backgrounds / "default.txt").write_text("not an image")
    (backgrounds / "sapatos.jpg").symlink_to(outside)
    (backgrounds / "roupas").symlink_to(outside.parent, target_is_directory=True)

    assert _find(backgrounds, "sapatos/a.jpg") is None
    assert _find(backgrounds, "roupas/a.jpg") is None


# -- compose: trim, fill, centre --------------------------------------------------------------


def _photo_with_product(size: tuple[int, int], box: tuple[int, int, int, int],
                        noise: bool = True) -> tuple[Image.Image, Image.Image]:
    """A grey photo with a red product in ``box`` and its mask; faint mask noise elsewhere."""
    image = Image.new("RGB", size, (128, 128, 128))
    image.paste(RED, box)
    mask = Image.new("L", size, 0)
    if noise:  # what a real model leaves in the background: below the trim threshold
        mask.paste(10, (0, 0, size[0], size[1] // 3))
    mask.paste(255, box)
    return image, mask


def _product_box(canvas: Image.Image) -> tuple[int, int, int, int]:
    """The box of everything that is not the white background, measured in the output."""
    diff = ImageChops.difference(canvas.convert("RGB"), Image.new("RGB", canvas.size, WHITE))
    box = diff.convert("L").point(lambda v: 255 if v > 40 else 0).getbbox()
    assert box is not None
    return box


@pytest.mark.parametrize("box, expected", [
    # a tall product off to the left: height fills 85 % of 1200 = 1020, width follows
    ((50, 40, 150, 240), (345, 90, 855, 1110)),
    # a wide product near the bottom right: width fills 1020
    ((200, 250, 600, 350), (90, 473, 1110, 728)),
    # a square product: both directions 1020
    ((10, 10, 110, 110), (90, 90, 1110, 1110)),
])
def test_the_product_is_trimmed_scaled_to_the_fill_ratio_and_centred(
        box: tuple[int, int, int, int], expected: tuple[int, int, int, int]) -> None:
    image, mask = _photo_with_product((640, 400), box)

    out = compose(image, mask, Image.new("RGB", (1200, 1200), WHITE), 0.85)

    assert out.size == (1200, 1200)
    measured = _product_box(out)
    assert all(abs(m - e) <= 2 for m, e in zip(measured, expected)), measured
    centre = ((measured[0] + measured[2]) // 2, (measured[1] + measured[3]) // 2)
    r, g, b = out.getpixel(centre)
    assert r > 180 and g < 50 and b < 50  # the product itself, not the grey of the photo
    assert out.getpixel((5, 5)) == WHITE


def test_fill_ratio_and_a_non_square_canvas() -> None:
    image, mask = _photo_with_product((300, 300), (100, 100, 200, 200))

    out = compose(image, mask, Image.new("RGB", (1200, 600), WHITE), 0.5)

    # the height limits: 50 % of 600 = 300 px, centred
    measured = _product_box(out)
    assert all(abs(m - e) <= 2 for m, e in zip(measured, (450, 150, 750, 450))), measured


@pytest.mark.parametrize("anchor, expected", [
    # a shirt cut at the waist: its 240 px of height fill 85 % of 1200 = 1020, standing on the
    # bottom edge; its 100 px of width become 425, centred
    ({"bottom"}, (387, 180, 812, 1200)),
    ({"top"}, (387, 0, 812, 1020)),
    ({"left"}, (0, 90, 425, 1110)),
    ({"right", "bottom"}, (775, 180, 1200, 1200)),
    # cut at both sides of an axis: from edge to edge of it (240 px → 1200), centred across
    ({"top", "bottom"}, (350, 0, 850, 1200)),
    # ... unless the other axis cannot take it whole: then as without an anchor
    ({"left", "right"}, (387, 90, 812, 1110)),
    (set(), (387, 90, 812, 1110)),
])
def test_a_product_cut_by_the_photos_edge_sits_on_that_edge_of_the_canvas(
        anchor: set[str], expected: tuple[int, int, int, int]) -> None:
    image, mask = _photo_with_product((640, 400), (50, 160, 150, 400))  # runs off the bottom

    out = compose(image, mask, Image.new("RGB", (1200, 1200), WHITE), 0.85, anchor=anchor)

    measured = _product_box(out)
    assert all(abs(m - e) <= 2 for m, e in zip(measured, expected)), measured


def test_a_mask_at_another_size_is_scaled_to_the_photo() -> None:
    image, mask = _photo_with_product((640, 400), (50, 40, 150, 240), noise=False)

    out = compose(image, mask.resize((320, 200)), Image.new("RGB", (1200, 1200), WHITE), 0.85)

    measured = _product_box(out)
    assert all(abs(m - e) <= 6 for m, e in zip(measured, (345, 90, 855, 1110))), measured


def test_the_files_own_transparency_also_cuts() -> None:
    image = Image.new("RGBA", (200, 200), (0, 0, 255, 0))  # transparent blue around
    image.paste((*RED, 255), (50, 50, 150, 150))
    mask = Image.new("L", (200, 200), 255)  # a remover that kept everything

    out = compose(image, mask, Image.new("RGB", (400, 400), WHITE), 1.0)

    assert out.getpixel((2, 2)) == WHITE  # the hidden blue never shows
    assert out.getpixel((200, 200))[0] > 180


def test_an_empty_mask_is_rejected_as_no_product() -> None:
    image, _ = _photo_with_product((100, 100), (10, 10, 20, 20))

    with pytest.raises(RejectedImage) as info:
        compose(image, Image.new("L", (100, 100), 10), Image.new("RGB", (300, 300)), 0.85)

    assert info.value.stage == "compose"
    assert info.value.reason.startswith("No product could be found")


# -- backgrounds: cover-crop and the cache ----------------------------------------------------


def test_a_wide_background_is_cover_cropped_to_its_centre(tmp_path: Path) -> None:
    # 1600×800: blue quarter | green half | red quarter. Covering 1200×1200 keeps the green half.
    wide = Image.new("RGB", (1600, 800), (0, 0, 255))
    wide.paste((0, 255, 0), (400, 0, 1200, 800))
    wide.paste((255, 0, 0), (1200, 0, 1600, 800))
    wide.save(tmp_path / "default.png")

    canvas = Backgrounds(tmp_path, (1200, 1200)).canvas(PurePosixPath("a.jpg"))

    assert canvas.size == (1200, 1200)
    assert canvas.mode == "RGB"
    for x, y in [(3, 3), (1196, 3), (3, 1196), (1196, 1196), (600, 600)]:
        r, g, b = canvas.getpixel((x, y))
        assert g > 240 and r < 15 and b < 15, (x, y)


def test_no_background_is_plain_white(tmp_path: Path) -> None:
    canvas = Backgrounds(tmp_path, (300, 200)).canvas(PurePosixPath("a.jpg"))

    assert canvas.size == (300, 200)
    assert canvas.getextrema() == ((255, 255), (255, 255), (255, 255))


def test_a_broken_background_gives_white_not_a_failure(tmp_path: Path) -> None:
    (tmp_path / "default.jpg").write_bytes(b"\xff\xd8\xff garbage")

    canvas = Backgrounds(tmp_path, (300, 300)).canvas(PurePosixPath("a.jpg"))

    assert canvas.getextrema() == ((255, 255), (255, 255), (255, 255))


def test_a_transparent_background_is_flattened_on_white(tmp_path: Path) -> None:
    Image.new("RGBA", (300, 300), (0, 0, 0, 0)).save(tmp_path / "default.png")

    canvas = Backgrounds(tmp_path, (300, 300)).canvas(PurePosixPath("a.jpg"))

    assert canvas.getpixel((150, 150)) == WHITE


def test_a_palette_background_with_transparency_is_flattened_on_white(tmp_path: Path) -> None:
    half = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    half.paste((0, 0, 255, 255), (0, 0, 50, 100))
    half.convert("P").save(tmp_path / "default.png")  # a palette with a tRNS chunk
    with Image.open(tmp_path / "default.png") as check:
        assert (check.mode, "transparency" in check.info) == ("P", True)

    canvas = Backgrounds(tmp_path, (100, 100)).canvas(PurePosixPath("a.jpg"))

    assert canvas.getpixel((10, 50)) == (0, 0, 255)
    assert canvas.getpixel((90, 50)) == WHITE


def test_the_cache_notices_a_changed_background(tmp_path: Path) -> None:
    path = tmp_path / "default.png"
    Image.new("RGB", (50, 50), (0, 0, 255)).save(path, compress_level=0)
    backgrounds = Backgrounds(tmp_path, (100, 100))
    assert backgrounds.canvas(PurePosixPath("a.jpg")).getpixel((50, 50)) == (0, 0, 255)
    before = path.stat()

    # same size on disk, new content, later mtime: only the mtime tells them apart
    Image.new("RGB", (50, 50), (255, 0, 0)).save(path, compress_level=0)
    assert path.stat().st_size == before.st_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 2_000_000_000))

    assert backgrounds.canvas(PurePosixPath("a.jpg")).getpixel((50, 50)) == (255, 0, 0)


def test_each_canvas_is_a_fresh_copy(tmp_path: Path) -> None:
    _image(tmp_path / "default.png", (0, 0, 255))
    backgrounds = Backgrounds(tmp_path, (100, 100))

    for _ in range(2):  # the first call prepares the canvas, the second finds it cached
        backgrounds.canvas(PurePosixPath("a.jpg")).paste((255, 0, 0), (0, 0, 100, 100))

    assert backgrounds.canvas(PurePosixPath("b.jpg")).getpixel((50, 50)) == (0, 0, 255)


def test_a_subfolder_gets_its_own_background(tmp_path: Path) -> None:
    _image(tmp_path / "default.png", (0, 0, 255))
    _image(tmp_path / "sapatos.png", (0, 255, 0))
    backgrounds = Backgrounds(tmp_path, (100, 100))

    assert backgrounds.canvas(PurePosixPath("sapatos/a.jpg")).getpixel((9, 9)) == (0, 255, 0)
    assert backgrounds.canvas(PurePosixPath("roupas/a.jpg")).getpixel((9, 9)) == (0, 0, 255)


# -- encode -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, pil_format, suffix", [
    ("jpeg", "JPEG", ".jpg"), ("png", "PNG", ".png"), ("webp", "WEBP", ".webp")])
def test_every_output_format_decodes_at_the_right_size(fmt: str, pil_format: str,
                                                       suffix: str) -> None:
    image, mask = _photo_with_product((640, 400), (50, 40, 150, 240))
    output = Output((1200, 900), fmt, 90, 0.85)
    composed = compose(image, mask, Image.new("RGB", output.size, WHITE), output.fill_ratio)

    data = encode(composed, output)

    with Image.open(io.BytesIO(data)) as im:
        assert (im.format, im.size, im.mode) == (pil_format, (1200, 900), "RGB")
        r, g, b = im.convert("RGB").getpixel((600, 450))
        assert r > 170 and g < 60 and b < 60
    assert output_rel(PurePosixPath("sapatos/tenis.branco.JPG"), output) == PurePosixPath(
        f"sapatos/tenis.branco{suffix}")


def test_jpeg_quality_is_applied() -> None:
    noisy = Image.effect_noise((300, 300), 60).convert("RGB")

    low = encode(noisy, Output((300, 300), "jpeg", 20, 0.85))
    high = encode(noisy, Output((300, 300), "jpeg", 95, 0.85))

    assert len(low) < len(high) / 2


# -- the cut-out ------------------------------------------------------------------------------


def test_a_cutout_file_keeps_the_photo_where_it_shows_and_clears_where_it_does_not() -> None:
    image = Image.effect_noise((120, 80), 40).convert("RGB")  # grain, as a camera leaves it
    mask = Image.new("L", image.size, 0)
    mask.paste(128, (20, 10, 100, 70))
    mask.paste(255, (40, 20, 80, 60))

    out = Image.open(io.BytesIO(encode(cutout(image, mask), Output(image.size, "png", 90, 1.0))))

    assert (out.mode, out.size) == ("RGBA", image.size)
    assert out.getchannel("A").tobytes() == mask.tobytes()
    for xy in [(50, 30), (25, 15)]:  # opaque and half-transparent: the photo's own colour
        assert out.getpixel(xy)[:3] == image.getpixel(xy)
    assert out.getpixel((5, 5)) == (0, 0, 0, 0)  # fully transparent: nothing to compress
