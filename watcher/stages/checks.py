"""Checks: each output file, as encoded, measured against its spec and its marketplace's rules.

Runs after every encode, on the bytes that will be published, so it must stay cheap: the header
is enough for ``size``, ``format``, ``colour_space`` and ``file_size``; ``fill`` reads the
product's mask where compose placed it. Only ``background`` decodes pixels, and only for the
outputs a marketplace wants on pure white (a JPEG decode of the canvas is most of its cost).

What "outside the product" means: the product is where compose's mask is at least
``PRODUCT_ALPHA`` (the value compose trims the product at). A JPEG with full-resolution colour
(4:4:4) codes every 8×8 block on its own, so the edge's ringing stays in the blocks the product
touches: every other block of the grid must decode to exactly (255, 255, 255), which covers every
pixel farther than one block (7 px) from the product. The outermost ``BORDER`` pixels must be
exactly white too, whatever touches them: that is what a marketplace's robot looks at first.

A failed check never stops a photo: the output is still published, and the caller counts, logs
and reports what failed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from watcher.outputs import OutputSpec

CHECKS = ("size", "format", "colour_space", "background", "fill", "file_size")
PRODUCT_ALPHA = 24  # compose.TRIM_THRESHOLD: below it the mask is background, not product
BLOCK = 8  # a JPEG block, and the grid the background is checked on
BORDER = 4  # pixels at each edge that must be exactly white on a pure-white output
# The product's box may differ from spec.fill by resampling: this share, plus 2 px per side.
FILL_TOLERANCE = 0.01
# What a marketplace asks of the product's share of the frame, beyond the output's own fill.
MIN_FILL = {"amazon": 0.85}
_PIL_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "avif": "AVIF"}
_NOT_WHITE = [255] * 255 + [0]  # per channel: 255 where a value is not 255
_PRODUCT = [0] * PRODUCT_ALPHA + [255] * (256 - PRODUCT_ALPHA)


@dataclass(frozen=True)
class CheckResult:
    check: str  # one of CHECKS
    ok: bool
    detail: str = ""  # why it failed, in words a shop understands: "fill 0.80 < 0.85"

    @property
    def outcome(self) -> str:
        return "pass" if self.ok else "fail"


def applicable(spec: OutputSpec) -> tuple[str, ...]:
    """The checks ``spec``'s outputs get (``check`` returns a result for each)."""
    return tuple(name for name in CHECKS if (
        (name != "background" or spec.pure_white) and (name != "fill" or spec.fill is not None)
        and (name != "file_size" or spec.max_bytes is not None)))


def check(spec: OutputSpec, data: bytes, size: tuple[int, int],
          mask: Image.Image | None = None, at: tuple[int, int] = (0, 0)) -> list[CheckResult]:
    """Check the encoded output ``data`` of ``spec``, in the order of ``CHECKS``. ``size``: the
    canvas it must have (the upright working image's for a cut-out); ``mask``: the product's
    mask as compose placed it on the canvas, top-left at ``at`` (None for a cut-out: nothing is
    placed)."""
    wanted = applicable(spec)
    results = []
    if "file_size" in wanted:
        assert spec.max_bytes is not None
        results.append(CheckResult("file_size", len(data) <= spec.max_bytes,
                                   f"file {_bytes(len(data))} > {_bytes(spec.max_bytes)}"))
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError) as exc:
        results.append(CheckResult("format", False, f"the file cannot be read: {exc}"))
        image = None
    if image is not None:
        results += _decoded(spec, image, data, size, wanted, mask, at)
    return sorted(results, key=lambda result: CHECKS.index(result.check))


def _decoded(spec: OutputSpec, image: Image.Image, data: bytes, size: tuple[int, int],
             wanted: tuple[str, ...], mask: Image.Image | None,
             at: tuple[int, int]) -> list[CheckResult]:
    expected = _PIL_FORMATS[spec.format]
    results = [
        CheckResult("size", image.size == size, f"size {_wh(image.size)}, expected {_wh(size)}"),
        CheckResult("format", image.format == expected,
                    f"format {image.format}, expected {expected}"),
        _colour_space(image, data)]
    product = None if mask is None else mask.point(_PRODUCT)  # 255 on the product, else 0
    if "fill" in wanted and product is not None:
        results.append(_fill(spec, image.size, product))
    if "background" in wanted:
        results.append(_background(image, product, at))
    return results


def _wh(size: tuple[int, int]) -> str:
    return f"{size[0]}×{size[1]}"


def _bytes(n: int) -> str:
    return (f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{n / 1024:.0f} KiB" if n >= 1024
            else f"{n} B")


def _colour_space(image: Image.Image, data: bytes) -> CheckResult:
    # Pillow reads a 16-bit RGB(A) PNG as 8-bit RGB(A): its header tells (IHDR bit depth)
    bits = data[24] if image.format == "PNG" and len(data) > 24 else 8
    if image.mode not in ("RGB", "RGBA") or bits != 8:
        return CheckResult("colour_space", False, f"colour {image.mode} {bits}-bit, expected "
                                                  "RGB or RGBA 8-bit")
    icc = image.info.get("icc_profile")
    if icc:
        name = _profile_name(icc)
        if "srgb" not in name.lower():
            return CheckResult("colour_space", False, f"colour profile {name!r}, expected "
                                                      "sRGB or none")
    return CheckResult("colour_space", True)


def _profile_name(icc: bytes) -> str:
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return (ImageCms.getProfileDescription(profile) or "").strip() or "unnamed"
    except (ImageCms.PyCMSError, OSError):
        return "unreadable"


def _fill(spec: OutputSpec, size: tuple[int, int], product: Image.Image) -> CheckResult:
    """The product's box against the canvas, on the axis it fills most (compose scales the
    product until one axis reaches ``fill``)."""
    assert spec.fill is not None
    box = product.getbbox()
    if box is None:
        return CheckResult("fill", False, "fill 0.00: no product on the canvas")
    measured = max((box[2] - box[0]) / size[0], (box[3] - box[1]) / size[1])
    tolerance = FILL_TOLERANCE + 2 / min(size)
    least = MIN_FILL.get(spec.preset)
    if least is not None and measured < least - 1 / min(size):
        return CheckResult("fill", False, f"fill {measured:.2f} < {least:.2f}")
    # a product the photo cut on both sides of an axis runs from edge to edge of the canvas
    edge_to_edge = measured >= 1 - 2 / min(size)
    return CheckResult("fill", abs(measured - spec.fill) <= tolerance or edge_to_edge,
                       f"fill {measured:.2f}, expected {spec.fill:.2f}")


def _background(image: Image.Image, product: Image.Image | None,
                at: tuple[int, int]) -> CheckResult:
    """Exactly white in every 8×8 block the product does not touch (the border included, but
    where a product cut by the photo's frame stands on the canvas's edge); without the product's
    place, exactly white at the border."""
    image.load()  # the decode: most of the cost of every check
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    w, h = rgb.size
    if product is None:
        darkest = 255
        for strip in ((0, 0, w, BORDER), (0, h - BORDER, w, h), (0, 0, BORDER, h),
                      (w - BORDER, 0, w, h)):
            darkest = min(darkest, *(low for low, _ in rgb.crop(strip).getextrema()))
        if darkest < 255:
            return CheckResult("background", False, f"background: the border is not white "
                                                    f"(darkest {darkest})")
    # per block: > 0 when any pixel of it is not white (one in 64 still averages to 4)
    grey = np.asarray(rgb.point(_NOT_WHITE * 3).reduce(BLOCK)).max(axis=2) > 0
    if product is not None:
        placed = Image.new("L", rgb.size, 0)
        placed.paste(product, at)
        grey &= np.asarray(placed.reduce(BLOCK)) == 0
    if not grey.any():
        return CheckResult("background", True)
    blocks = np.kron(grey, np.ones((BLOCK, BLOCK), bool))[:h, :w]
    pixels = np.asarray(rgb)[blocks]
    stray = pixels.min(axis=1) < 255
    return CheckResult("background", False, f"background: {int(stray.sum())} px grey farther "
                                            f"than a block from the product (darkest "
                                            f"{int(pixels.min())})")


__all__ = ["CHECKS", "CheckResult", "applicable", "check"]
