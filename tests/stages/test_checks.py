"""Output checks on real encodes: each check passes on a good output and names what is wrong
with a bad one (wrong size or format, CMYK, a foreign colour profile, a grey border, grey far from
the product, too little fill, too big a file)."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from watcher.outputs import MIB, OutputSpec, build
from watcher.stages.checks import CHECKS, CheckResult, applicable, check
from watcher.encoding import encode
from watcher.stages.compose import Composed, cutout, place

DATA = Path(__file__).resolve().parent.parent / "data"
WHITE = (255, 255, 255)
SPECS = {spec.name: spec for spec in build(
    {"size": (1200, 1200), "format": "jpeg", "quality": 90, "fill": 0.85},
    ("default", "amazon", "mercadolivre", "cutout"), {}, {}).outputs}


def _spec(name: str, **changes: object) -> OutputSpec:
    """A preset at a test-sized canvas (still not a multiple of 16: blocks do not line up)."""
    spec = SPECS[name]
    return replace(spec, **{"size": (360, 360) if spec.size else None, **changes})


def _photo() -> tuple[Image.Image, Image.Image]:
    """A grey studio photo with a dark, round product, and its soft-edged mask."""
    image = Image.new("RGB", (300, 240), (200, 200, 200))
    mask = Image.new("L", image.size, 0)
    for layer, (colour, value) in enumerate([((40, 30, 120), 60), ((40, 30, 120), 255)]):
        inset = 3 - 3 * layer
        box = (90 - inset, 50 - inset, 210 + inset, 190 + inset)
        image.paste(colour, box)
        mask.paste(value, box)
    return image, mask


def _composed(spec: OutputSpec, fill: float | None = None) -> Composed:
    image, mask = _photo()
    assert spec.size is not None
    canvas = Image.new("RGB", spec.size, WHITE)
    return place(image, mask, canvas, fill or spec.fill or 0.85, pure_white=spec.pure_white)


def _check(spec: OutputSpec, data: bytes, composed: Composed,
           size: tuple[int, int] | None = None) -> dict[str, CheckResult]:
    results = check(spec, data, size or composed.image.size, composed.mask, composed.at)
    return {result.check: result for result in results}


def _failed(results: dict[str, CheckResult]) -> dict[str, str]:
    return {name: result.detail for name, result in results.items() if not result.ok}


@pytest.mark.parametrize("name", ["default", "amazon", "mercadolivre"])
def test_a_good_output_passes_every_check_it_gets(name: str) -> None:
    spec = _spec(name)
    composed = _composed(spec)

    results = _check(spec, encode(composed.image, spec), composed)

    assert _failed(results) == {}
    assert tuple(results) == tuple(c for c in CHECKS if c in applicable(spec))


def test_the_marketplace_presets_get_the_background_check_and_the_cutout_the_basics() -> None:
    assert applicable(SPECS["amazon"]) == ("size", "format", "colour_space", "background", "fill")
    assert "file_size" in applicable(SPECS["mercadolivre"])
    assert applicable(SPECS["default"]) == ("size", "format", "colour_space", "fill")
    assert applicable(SPECS["cutout"]) == ("size", "format", "colour_space")


def test_a_cutout_is_checked_against_the_working_images_size() -> None:
    image, mask = _photo()
    data = encode(cutout(image, mask), SPECS["cutout"])

    assert all(r.ok for r in check(SPECS["cutout"], data, image.size))
    wrong = {r.check: r for r in check(SPECS["cutout"], data, (600, 480))}
    assert wrong["size"].detail == "size 300×240, expected 600×480"
    assert not wrong["size"].ok and wrong["format"].ok


def test_a_canvas_of_the_wrong_size_fails_size() -> None:
    spec = _spec("mercadolivre")
    composed = _composed(spec)

    failed = _failed(_check(spec, encode(composed.image, spec), composed, size=(1200, 1200)))

    assert failed == {"size": "size 360×360, expected 1200×1200"}


def test_another_format_than_the_spec_says_fails_format() -> None:
    spec = _spec("default")
    composed = _composed(spec)

    failed = _failed(_check(spec, encode(composed.image, replace(spec, format="png")), composed))

    assert failed == {"format": "format PNG, expected JPEG"}


def test_bytes_that_are_no_image_fail_format_and_nothing_else_is_measured() -> None:
    spec = _spec("mercadolivre")

    results = check(spec, b"not an image", (360, 360))

    assert [(r.check, r.ok) for r in results] == [("format", False), ("file_size", True)]
    assert results[0].detail.startswith("the file cannot be read")


def test_cmyk_fails_colour_space() -> None:
    data = (DATA / "hostile" / "pil_sample_cmyk.jpg").read_bytes()

    failed = _failed({r.check: r for r in check(_spec("default"), data, (100, 100))})

    assert failed == {"colour_space": "colour CMYK 8-bit, expected RGB or RGBA 8-bit"}


def test_a_16_bit_png_fails_colour_space() -> None:
    data = (DATA / "pngsuite" / "basn2c16.png").read_bytes()  # Pillow opens it as 8-bit RGB

    failed = _failed({r.check: r for r in check(_spec("cutout"), data, (32, 32))})

    assert failed == {"colour_space": "colour RGB 16-bit, expected RGB or RGBA 8-bit"}


def test_a_profile_other_than_srgb_fails_colour_space_and_srgb_passes() -> None:
    with Image.open(DATA / "products" / "t-shirts.jpg") as camera:  # "Camera RGB Profile"
        foreign = camera.info["icc_profile"]
    with Image.open(DATA / "products" / "books.jpg") as srgb_photo:  # "sRGB IEC61966-2.1"
        srgb = srgb_photo.info["icc_profile"]
    spec = _spec("default")
    composed = _composed(spec)

    def colour(icc: bytes) -> CheckResult:
        buf = io.BytesIO()
        composed.image.save(buf, "JPEG", quality=90, icc_profile=icc)
        return _check(spec, buf.getvalue(), composed)["colour_space"]

    assert colour(srgb).ok
    assert colour(foreign).detail == ("colour profile 'Camera RGB Profile', expected sRGB or "
                                      "none")
    assert not colour(foreign).ok


def test_a_grey_border_fails_background() -> None:
    spec = _spec("amazon")
    composed = _composed(spec)
    composed.image.paste((250, 250, 250), (0, 357, 360, 360))  # the bottom three rows

    failed = _failed(_check(spec, encode(composed.image, spec), composed))

    assert set(failed) == {"background"}
    assert failed["background"].startswith("background: ")  # the three rows of grey, and the
    assert "px grey farther than a block" in failed["background"]  # JPEG blocks they fall in
    assert failed["background"].endswith("(darkest 250)")


def test_grey_farther_than_a_block_from_the_product_fails_background() -> None:
    spec = _spec("mercadolivre")
    composed = _composed(spec)
    x0, y0 = composed.at  # (32, 9): a faint speck in the margin left of the product
    composed.image.paste((252, 252, 252), (x0 - 24, 150, x0 - 21, 153))

    failed = _failed(_check(spec, encode(composed.image, spec), composed))

    assert set(failed) == {"background"}
    assert "grey farther than a block from the product" in failed["background"]


def test_the_edge_of_the_product_may_ring_inside_its_own_blocks_only() -> None:
    spec = _spec("amazon")
    composed = _composed(spec)
    decoded = Image.open(io.BytesIO(encode(composed.image, spec))).convert("RGB")

    # the product's soft edge makes JPEG ring: the white next to it is not all white...
    x0, y0 = composed.at
    w, h = composed.mask.size
    ring = decoded.crop((x0 - 6, y0 - 6, x0 + w + 6, y0))
    assert min(low for low, _ in ring.getextrema()) < 255
    # ...and the check passes, because with 4:4:4 that stays in the blocks the product touches
    assert _check(spec, encode(composed.image, spec), composed)["background"].ok


def test_colour_at_half_resolution_spreads_grey_past_the_products_blocks() -> None:
    """Why compose encodes pure-white JPEGs 4:4:4: with 4:2:0 the check fails."""
    spec = _spec("amazon")
    composed = _composed(spec)
    plain = SimpleNamespace(format="jpeg", quality=spec.quality)  # no pure_white: 4:2:0

    failed = _failed(_check(spec, encode(composed.image, plain), composed))

    assert set(failed) == {"background"}


def test_the_models_faint_haze_is_not_painted_on_pure_white() -> None:
    """Mask values below the trim threshold (the model's haze over the photo's background) would
    paint grey far from the product; compose leaves them out on pure-white outputs."""
    image, mask = _photo()
    mask.paste(12, (210, 60, 290, 180))  # haze right of the product, inside its box's rows
    mask.paste(255, (284, 110, 290, 112))  # a sliver that widens the box to cover the haze
    spec = _spec("amazon")

    def background(pure_white: bool) -> CheckResult:
        composed = place(image, mask, Image.new("RGB", (360, 360), WHITE), 0.88,
                         pure_white=pure_white)
        return _check(spec, encode(composed.image, spec), composed)["background"]

    assert not background(pure_white=False).ok
    assert background(pure_white=True).ok


def test_fill_below_the_amazon_minimum_fails() -> None:
    spec = _spec("amazon", fill=0.80)
    composed = _composed(spec)

    failed = _failed(_check(spec, encode(composed.image, spec), composed))

    assert failed == {"fill": "fill 0.80 < 0.85"}


def test_a_product_smaller_than_the_spec_says_fails_fill() -> None:
    spec = _spec("mercadolivre")
    composed = _composed(spec, fill=0.5)  # composed at half the canvas, checked against 0.95

    failed = _failed(_check(spec, encode(composed.image, spec), composed))

    assert failed == {"fill": "fill 0.50, expected 0.95"}


def test_a_file_over_the_marketplaces_limit_fails_file_size() -> None:
    spec = _spec("mercadolivre")
    composed = _composed(spec)
    data = encode(composed.image, spec)

    assert _check(replace(spec, max_bytes=10 * MIB), data, composed)["file_size"].ok
    small = _check(replace(spec, max_bytes=1000), data, composed)["file_size"]

    assert not small.ok
    assert small.detail == f"file {len(data) / 1024:.0f} KiB > 1000 B"


def test_the_product_is_what_compose_trims_to() -> None:
    from watcher.stages.checks import PRODUCT_ALPHA
    from watcher.stages.compose import TRIM_THRESHOLD

    assert PRODUCT_ALPHA == TRIM_THRESHOLD
