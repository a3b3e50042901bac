"""Compose: the cut-out, trimmed to its product, scaled and centred on a background canvas.

Works at output scale: the photo arrives already reduced (validate drafts JPEGs), the mask is the
same size, and only the trimmed product is resampled to its final size. One photo may become
several outputs (``watcher.outputs``): each gets its own canvas, size, fill and format from its
spec, from the same photo and mask.

A product the photo's frame cuts (its mask runs along an edge of the photo: a shirt cut at the
waist) is anchored to that edge of the canvas instead of floating with a hard straight edge.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps

from watcher.outputs import OutputSpec

from watcher.errors import RejectedImage

# Mask values below this are background noise, not product, when finding the product's box.
TRIM_THRESHOLD = 24
BACKGROUND_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_WHITE = (255, 255, 255)
_MAX_BACKGROUND_PIXELS = 64_000_000
_MAX_BACKGROUND_BYTES = 64 * 1024**2
# A marketplace wants every pixel outside the product exactly white, but the model leaves faint
# values (up to TRIM_THRESHOLD) over the photo's background inside the product's box: a ghost of
# a model's hair or arm, a shadow, painting greys down to ~231 over up to an eighth of the canvas.
# On pure-white outputs they are cleared; above the threshold a ramp (×2 up to twice it) keeps
# the product's own edge fading in without a step.
_CLEAR = [0 if v <= TRIM_THRESHOLD else min(v, 2 * (v - TRIM_THRESHOLD)) for v in range(256)]


@dataclass(frozen=True)
class Output:
    size: tuple[int, int]
    format: str  # jpeg | png | webp
    quality: int
    fill_ratio: float

    @property
    def suffix(self) -> str:
        return {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}[self.format]


def find_background(folder: Path, rel: PurePosixPath) -> Path | None:
    """The background for an input at ``rel`` (SPEC §2).

    For ``<sub>/…/x.jpg``: ``backgrounds/<sub>.*`` or an image in ``backgrounds/<sub>/``, the
    deepest matching folder first; else ``backgrounds/default.*``; else the only image there;
    else None (plain white).
    """
    parents = [PurePosixPath(*rel.parts[:n]) for n in range(len(rel.parts) - 1, 0, -1)]
    for sub in parents:
        found = _image_named(folder, str(sub)) or _first_image_in(folder / sub)
        if found:
            return found
    default = _image_named(folder, "default")
    if default:
        return default
    images = _images_in(folder)
    return images[0] if len(images) == 1 else None


def _is_image_file(path: Path) -> bool:
    return (path.suffix.lower() in BACKGROUND_SUFFIXES and not path.name.startswith(".")
            and path.is_file() and not path.is_symlink())


def _image_named(folder: Path, stem: str) -> Path | None:
    for suffix in BACKGROUND_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if _is_image_file(candidate):
                return candidate
    return None


def _images_in(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if _is_image_file(p))
    except OSError:
        return []


def _first_image_in(folder: Path) -> Path | None:
    if folder.is_symlink() or not folder.is_dir():
        return None
    images = _images_in(folder)
    return images[0] if images else None


class Backgrounds:
    """Background canvases, cover-cropped to an output's size and cached by file, mtime and size."""

    def __init__(self, folder: Path, size: tuple[int, int], capacity: int = 16) -> None:
        self.folder = folder
        self.size = size
        self._cache: OrderedDict[tuple[str, int, int, tuple[int, int]], Image.Image] = (
            OrderedDict())
        self._capacity = capacity
        self._lock = threading.Lock()

    def canvas(self, rel: PurePosixPath, size: tuple[int, int] | None = None) -> Image.Image:
        """A fresh RGB canvas of ``size`` (default: the output size) for the input at ``rel``."""
        return self._canvas(find_background(self.folder, rel), size or self.size)

    def named(self, name: str, size: tuple[int, int]) -> Image.Image:
        """A canvas from the image ``name`` in the backgrounds folder (a shop folder's own);
        white when it is not there."""
        path = self.folder / name
        return self._canvas(path if _is_image_file(path) else None, size)

    def _canvas(self, path: Path | None, size: tuple[int, int]) -> Image.Image:
        if path is None:
            return Image.new("RGB", size, _WHITE)
        try:
            st = path.stat()
        except OSError:
            return Image.new("RGB", size, _WHITE)
        key = (str(path), st.st_mtime_ns, st.st_size, size)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached.copy()
        prepared = self._prepare(path, size)
        with self._lock:
            self._cache[key] = prepared
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return prepared.copy()

    def _prepare(self, path: Path, size: tuple[int, int]) -> Image.Image:
        from loguru import logger

        try:
            if path.stat().st_size > _MAX_BACKGROUND_BYTES:
                raise ValueError("background file too large")
            with Image.open(path) as im:
                if im.size[0] * im.size[1] > _MAX_BACKGROUND_PIXELS:
                    raise ValueError("background has too many pixels")
                im.draft("RGB", size)
                # a palette or grey image with a tRNS chunk is transparent too
                alpha = "A" in im.mode or "transparency" in im.info
                im = ImageOps.exif_transpose(im.convert("RGBA" if alpha else "RGB"))
                flat = Image.new("RGB", im.size, _WHITE)
                flat.paste(im, mask=im.getchannel("A") if im.mode == "RGBA" else None)
                return ImageOps.fit(flat, size, Image.Resampling.LANCZOS)
        except Exception as exc:  # a broken background must not stop production: use white
            logger.warning("background {} unusable ({}); using plain white", path, exc)
            return Image.new("RGB", size, _WHITE)


def product_box(mask: Image.Image) -> tuple[int, int, int, int]:
    """The box around the product in ``mask``; RejectedImage when the mask holds nothing."""
    box = mask.point(lambda v: 255 if v >= TRIM_THRESHOLD else 0).getbbox()
    if box is None:
        raise RejectedImage.because("no_product", "empty mask", stage="compose",
                                    kind="no_product")
    return box


@dataclass(frozen=True)
class Composed:
    """A composed canvas, and where the product went: its mask at its size on the canvas,
    top-left at ``at`` (what the output checks measure the product and its background by)."""

    image: Image.Image
    mask: Image.Image
    at: tuple[int, int]


def compose(image: Image.Image, mask: Image.Image, canvas: Image.Image,
            fill_ratio: float, anchor: Collection[str] = (), shadow: str = "none",
            pure_white: bool = False) -> Image.Image:
    """Trim ``image`` to the product in ``mask``, scale it to fill ``fill_ratio`` of the canvas
    (in both directions, keeping its aspect), and paste it in the centre. An RGBA canvas stays
    transparent around the product; ``shadow="contact"`` lays a soft shadow under it.
    ``pure_white``: the mask's faint values below ``TRIM_THRESHOLD`` leave the canvas untouched
    (see ``_CLEAR``).

    ``anchor``: the edges of the photo that cut the product (``"top"``, ``"bottom"``, ``"left"``,
    ``"right"``; what ``refine.touching_edges`` finds). The product then sits flush against the
    same edges of the canvas instead of floating: a shirt cut at the waist stands on the bottom
    edge. When both edges of an axis cut it, it stays centred on that axis."""
    return place(image, mask, canvas, fill_ratio, anchor, shadow, pure_white).image


def place(image: Image.Image, mask: Image.Image, canvas: Image.Image, fill_ratio: float,
          anchor: Collection[str] = (), shadow: str = "none",
          pure_white: bool = False, box: tuple[int, int, int, int] | None = None) -> Composed:
    """``compose``, also telling where the product went. ``box``: ``product_box(mask)``, when
    the caller places one photo on several canvases (a threshold and a scan of the whole mask,
    ~13 ms at 12 MP, done once)."""
    if mask.size != image.size:
        mask, box = mask.resize(image.size, Image.Resampling.BILINEAR), None
    if box is None:
        box = product_box(mask)
    if image.mode == "RGBA":  # the file's own transparency counts too
        image, mask = _with_own_alpha(image, mask, box)
    cw, ch = canvas.size
    pw, ph = box[2] - box[0], box[3] - box[1]
    scale = _scale((cw, ch), (pw, ph), fill_ratio, anchor)
    size = (min(cw, max(1, round(pw * scale))), min(ch, max(1, round(ph * scale))))
    # resample straight from the product's box: no full-scale crop is copied first. BICUBIC:
    # Pillow widens its support with the scale, so a ≤ 2× reduction is antialiased like LANCZOS
    # at two thirds of its time. A larger one (a cut-out among the outputs keeps the photo at its
    # full size: 3-4× a 1200² canvas) is first box-reduced by whole factors (reducing_gap 1), as
    # the JPEG draft does for one output: a third of the time, 48-50 dB from the full resampling
    product = image.resize(size, Image.Resampling.BICUBIC, box=box, reducing_gap=1.0)
    # the mask is refined to a ~2 px edge at the working size: LANCZOS adds nothing but time
    alpha = mask.resize(size, Image.Resampling.BILINEAR, box=box, reducing_gap=1.0)
    where = _place(canvas.size, size, anchor)
    if shadow == "contact":
        _contact_shadow(canvas, where, size, alpha)
    pasted = alpha.point(_CLEAR) if pure_white else alpha
    if canvas.mode == "RGBA":
        product.putalpha(pasted)
        canvas.alpha_composite(product, where)
    else:
        canvas.paste(product, where, pasted)
    return Composed(canvas, alpha, where)


def _scale(canvas: tuple[int, int], product: tuple[int, int], fill_ratio: float,
           anchor: Collection[str]) -> float:
    """``fill_ratio`` of the canvas on the axis the product fills most; but a product the photo
    cuts on both sides of an axis (a dress cut at the neck and the knees) runs from edge to edge
    of that axis, as far as the other axis lets it whole: its cut lines must not float."""
    (cw, ch), (pw, ph) = canvas, product
    scale = min(cw * fill_ratio / pw, ch * fill_ratio / ph)
    spans = [c / p for c, p, ends in ((cw, pw, ("left", "right")), (ch, ph, ("top", "bottom")))
             if all(end in anchor for end in ends)]
    if spans and min(spans) <= min(cw / pw, ch / ph):  # it fits whole that way
        scale = max(scale, min(spans))
    return scale


def _place(canvas: tuple[int, int], size: tuple[int, int],
           anchor: Collection[str]) -> tuple[int, int]:
    """Top-left corner of the product: centred, or flush with the one edge of each axis that
    cuts it (cut on both sides of an axis, it stays centred on that axis)."""
    (cw, ch), (w, h) = canvas, size
    x, y = (cw - w) // 2, (ch - h) // 2
    if ("left" in anchor) != ("right" in anchor):
        x = 0 if "left" in anchor else cw - w
    if ("top" in anchor) != ("bottom" in anchor):
        y = 0 if "top" in anchor else ch - h
    return x, y


def _contact_shadow(canvas: Image.Image, where: tuple[int, int], size: tuple[int, int],
                    alpha: Image.Image) -> None:
    """A soft shadow where the product meets the ground: a blurred ellipse under its base."""
    (x, y), (w, h) = where, size
    bottom = y + h
    if bottom >= canvas.size[1] - 2:
        return  # standing on the canvas's edge: nothing below to cast on
    ellipse_h = max(4, h // 12)
    blur = max(2, ellipse_h // 2)
    pad = 3 * blur
    layer = Image.new("L", (w + 2 * pad, ellipse_h + 2 * pad), 0)
    ImageDraw.Draw(layer).ellipse((pad + w // 10, pad, pad + w - w // 10, pad + ellipse_h),
                                  fill=110)
    layer = layer.filter(ImageFilter.GaussianBlur(blur))
    origin = (x - pad, bottom - ellipse_h // 2 - pad)
    dark = Image.new(canvas.mode, layer.size, (0, 0, 0, 255) if canvas.mode == "RGBA"
                     else (0, 0, 0))
    if canvas.mode == "RGBA":
        dark.putalpha(layer)
        dest, source = _clip(origin, canvas.size, layer.size)
        canvas.alpha_composite(dark, dest, source)
    else:
        canvas.paste(dark, origin, layer)


def _clip(origin: tuple[int, int], canvas: tuple[int, int],
          size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """alpha_composite wants a destination inside the canvas: the part of the layer that is."""
    x, y = origin
    left, top = max(0, -x), max(0, -y)
    right = min(size[0], canvas[0] - x)
    bottom = min(size[1], canvas[1] - y)
    return (x + left, y + top), (left, top, max(left, right), max(top, bottom))


def cutout(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The photo at its own size with the mask as alpha (a drop-in for ``rembg p`` output).

    The colour under a fully transparent pixel is left as the photo's: the PNG writer stores
    such pixels as (0, 0, 0, 0), as rembg does, while it passes over them anyway (clearing them
    here took three passes over 48 MB at 12 MP: ~80 ms of the ~110 this took)."""
    if mask.size != image.size:
        mask = mask.resize(image.size, Image.Resampling.BILINEAR)
    if image.mode == "RGBA":
        mask = ImageChops.multiply(mask, image.getchannel("A"))
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return Image.merge("RGBA", (*rgb.split(), mask))


def canvas_for(spec: OutputSpec, backgrounds: Backgrounds, rel: PurePosixPath) -> Image.Image:
    """A fresh canvas for ``spec``: transparent, white, a colour, the folder's background image,
    or a named image from the backgrounds folder."""
    assert spec.size is not None
    background = spec.background
    if background == "transparent":
        return Image.new("RGBA", spec.size, (0, 0, 0, 0))
    if background == "white":
        return Image.new("RGB", spec.size, _WHITE)
    if background.startswith("#"):
        return Image.new("RGB", spec.size, background)
    if background == "folder":
        return backgrounds.canvas(rel, spec.size)
    return backgrounds.named(background, spec.size)


def _with_own_alpha(image: Image.Image, mask: Image.Image,
                    box: tuple[int, int, int, int]) -> tuple[Image.Image, Image.Image]:
    """RGB and a mask that is also transparent where the file itself is, inside ``box``."""
    rgb, own = image.convert("RGB"), image.getchannel("A")
    inside = Image.new("L", image.size, 0)
    inside.paste(ImageChops.multiply(mask.crop(box), own.crop(box)), box[:2])
    return rgb, inside


def output_rel(rel: PurePosixPath, output: Output) -> PurePosixPath:
    """Where the thumbnail of ``rel`` goes, relative to OUTPUT_PATH: same folders, new suffix."""
    return rel.with_name(rel.stem + output.suffix)


__all__ = ["Output", "Backgrounds", "Composed", "canvas_for", "compose", "cutout",
           "find_background", "output_rel", "place", "product_box"]
