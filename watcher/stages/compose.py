"""Compose: the cut-out, trimmed to its product, scaled and centred on a background canvas.

Works at output scale: the photo arrives already reduced (validate drafts JPEGs), the mask is the
same size, and only the trimmed product is resampled to its final size.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, ImageChops, ImageOps

from watcher.errors import RejectedImage

# Mask values below this are background noise, not product, when finding the product's box.
TRIM_THRESHOLD = 24
BACKGROUND_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_WHITE = (255, 255, 255)
_MAX_BACKGROUND_PIXELS = 64_000_000
_MAX_BACKGROUND_BYTES = 64 * 1024**2


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
    """Background canvases, cover-cropped to the output size and cached by file and mtime."""

    def __init__(self, folder: Path, size: tuple[int, int], capacity: int = 16) -> None:
        self.folder = folder
        self.size = size
        self._cache: OrderedDict[tuple[str, int, int], Image.Image] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def canvas(self, rel: PurePosixPath) -> Image.Image:
        """A fresh RGB canvas of the output size for the input at ``rel``."""
        path = find_background(self.folder, rel)
        if path is None:
            return Image.new("RGB", self.size, _WHITE)
        try:
            st = path.stat()
        except OSError:
            return Image.new("RGB", self.size, _WHITE)
        key = (str(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached.copy()
        prepared = self._prepare(path)
        with self._lock:
            self._cache[key] = prepared
            while len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        return prepared.copy()

    def _prepare(self, path: Path) -> Image.Image:
        from loguru import logger

        try:
            if path.stat().st_size > _MAX_BACKGROUND_BYTES:
                raise ValueError("background file too large")
            with Image.open(path) as im:
                if im.size[0] * im.size[1] > _MAX_BACKGROUND_PIXELS:
                    raise ValueError("background has too many pixels")
                im.draft("RGB", self.size)
                # a palette or grey image with a tRNS chunk is transparent too
                alpha = "A" in im.mode or "transparency" in im.info
                im = ImageOps.exif_transpose(im.convert("RGBA" if alpha else "RGB"))
                flat = Image.new("RGB", im.size, _WHITE)
                flat.paste(im, mask=im.getchannel("A") if im.mode == "RGBA" else None)
                return ImageOps.fit(flat, self.size, Image.Resampling.LANCZOS)
        except Exception as exc:  # a broken background must not stop production: use white
            logger.warning("background {} unusable ({}); using plain white", path, exc)
            return Image.new("RGB", self.size, _WHITE)


def product_box(mask: Image.Image) -> tuple[int, int, int, int]:
    """The box around the product in ``mask``; RejectedImage when the mask holds nothing."""
    box = mask.point(lambda v: 255 if v >= TRIM_THRESHOLD else 0).getbbox()
    if box is None:
        raise RejectedImage("No product could be found in the photo (the background removal "
                            "left nothing).", "empty mask", stage="compose",
                            kind="no_product")
    return box


def compose(image: Image.Image, mask: Image.Image, canvas: Image.Image,
            fill_ratio: float, anchor: Collection[str] = ()) -> Image.Image:
    """Trim ``image`` to the product in ``mask``, scale it to fill ``fill_ratio`` of the canvas
    (in both directions, keeping its aspect), and paste it in the centre.

    ``anchor``: the edges of the photo that cut the product (``"top"``, ``"bottom"``, ``"left"``,
    ``"right"``; what ``refine.touching_edges`` finds). The product then sits flush against the
    same edges of the canvas instead of floating: a shirt cut at the waist stands on the bottom
    edge. When both edges of an axis cut it, it stays centred on that axis."""
    if mask.size != image.size:
        mask = mask.resize(image.size, Image.Resampling.BILINEAR)
    box = product_box(mask)
    if image.mode == "RGBA":  # the file's own transparency counts too
        image, mask = _with_own_alpha(image, mask, box)
    cw, ch = canvas.size
    pw, ph = box[2] - box[0], box[3] - box[1]
    scale = min(cw * fill_ratio / pw, ch * fill_ratio / ph)
    size = (max(1, round(pw * scale)), max(1, round(ph * scale)))
    # resample straight from the product's box: no full-scale crop is copied first. BICUBIC:
    # Pillow widens its support with the scale, so a ≤ 2× reduction (the working image is at
    # most twice the output) is antialiased like LANCZOS at two thirds of its time
    product = image.resize(size, Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)
    # the mask is a smooth upscale of the model's 320×320 output: LANCZOS adds nothing but time
    alpha = mask.resize(size, Image.Resampling.BILINEAR, box=box)
    x = _place(cw - size[0], "left" in anchor, "right" in anchor)
    y = _place(ch - size[1], "top" in anchor, "bottom" in anchor)
    canvas.paste(product, (x, y), alpha)
    return canvas


def _place(room: int, at_start: bool, at_end: bool) -> int:
    """Where the product starts on one axis of the canvas, given the ``room`` it leaves."""
    if at_start != at_end:
        return 0 if at_start else room
    return room // 2


def _with_own_alpha(image: Image.Image, mask: Image.Image,
                    box: tuple[int, int, int, int]) -> tuple[Image.Image, Image.Image]:
    """RGB and a mask that is also transparent where the file itself is, inside ``box``."""
    rgb, own = image.convert("RGB"), image.getchannel("A")
    inside = Image.new("L", image.size, 0)
    inside.paste(ImageChops.multiply(mask.crop(box), own.crop(box)), box[:2])
    return rgb, inside


def encode(image: Image.Image, output: Output) -> bytes:
    buf = io.BytesIO()
    if output.format == "jpeg":
        image.save(buf, "JPEG", quality=output.quality, optimize=False, progressive=False,
                   subsampling="4:2:0")
    elif output.format == "webp":
        image.save(buf, "WEBP", quality=output.quality, method=4)
    else:
        image.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def output_rel(rel: PurePosixPath, output: Output) -> PurePosixPath:
    """Where the thumbnail of ``rel`` goes, relative to OUTPUT_PATH: same folders, new suffix."""
    return rel.with_name(rel.stem + output.suffix)


__all__ = ["Output", "Backgrounds", "compose", "encode", "find_background", "output_rel",
           "product_box"]
