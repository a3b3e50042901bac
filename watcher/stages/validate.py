"""Validate: is this file a photo we may decode, and decode it safely at working scale.

Never trusts the name: the file is opened without following links and without blocking (a FIFO
named ``x.jpg`` must not hang us), must be a regular file with one link, is capped in bytes before
it is read and in pixels before it is decoded, and its format is decided by its first bytes.
The result is an 8-bit sRGB image, upright, no larger than needed for the output.
"""

from __future__ import annotations

import functools
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageCms, ImageFile, UnidentifiedImageError

from watcher.errors import RejectedImage

# Truncated files must fail loudly, never decode grey half-images.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_PIL_FORMATS = {"jpeg": ("JPEG", "MPO"), "png": ("PNG",), "webp": ("WEBP",)}
_HUMAN = {"jpeg": "JPEG", "png": "PNG", "webp": "WebP"}
_SRGB = ImageCms.createProfile("sRGB")
# Every 16th level of each channel plus the grey ramp: a profile that maps these to themselves
# is sRGB, whatever its name says.
_LEVELS = (*range(0, 256, 17),)
_PROBE = Image.frombytes("RGB", (4352, 1), bytes(
    [c for r in _LEVELS for g in _LEVELS for b in _LEVELS for c in (r, g, b)]
    + [v for v in range(256) for _ in range(3)]))
_ORIENTATION = 0x0112
_RESIZE_BAND_ROWS = 128  # rows of the working copy resized at a time
_TRANSPOSE = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_pixels: int
    allowed_formats: tuple[str, ...]
    # the working image needs at least this many pixels per side to fill the output well
    target: tuple[int, int]


@dataclass
class Photo:
    """A decoded input: ``image`` is RGB, or RGBA when the file itself carried transparency."""

    data: bytes
    format: str
    original_size: tuple[int, int]
    image: Image.Image

    @property
    def has_alpha(self) -> bool:
        return self.image.mode == "RGBA"


def read_input(path: Path, max_bytes: int) -> bytes:
    """The bytes of a regular file, refusing links, FIFOs, devices, oversize files and files the
    daemon's user may not read."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if os.path.islink(path):
            raise RejectedImage.because("symlink", f"symlink: {exc}", kind="link") from None
        if isinstance(exc, PermissionError):  # its mode or owner, not a fault of the daemon
            raise RejectedImage.because("not_readable", f"uid {os.geteuid()}: {exc}",
                                        kind="not_readable") from None
        raise
    try:
        st = os.fstat(fd)
        _check_kind(st)
        if st.st_size > max_bytes:
            raise RejectedImage.because(
                "too_large_size", f"{st.st_size} bytes > MAX_FILE_SIZE {max_bytes}",
                kind="too_large", size=_mib(st.st_size), limit=_mib(max_bytes))
        if st.st_size == 0:
            raise RejectedImage.because("empty", "size 0", kind="empty")
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > max_bytes:  # grew while we read it
                raise RejectedImage.because("too_large", f"more than {max_bytes} bytes read",
                                            kind="too_large", limit=_mib(max_bytes))
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _check_kind(st: os.stat_result) -> None:
    if stat.S_ISFIFO(st.st_mode):
        raise RejectedImage.because("fifo", "S_ISFIFO", kind="not_a_file")
    if not stat.S_ISREG(st.st_mode):
        raise RejectedImage.because("special_file", f"st_mode {st.st_mode:o}", kind="not_a_file")
    if st.st_nlink > 1:
        raise RejectedImage.because("hard_link", f"st_nlink {st.st_nlink}", kind="link")


def _mib(n: int) -> float:
    """Megabytes (MiB) for a message: written with one decimal in the shop's language."""
    return n / 1024**2


def sniff(data: bytes) -> str | None:
    """The format by content: ``jpeg``, ``png``, ``webp``, or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def decode(data: bytes, limits: Limits) -> Photo:
    """Decode ``data`` to an upright 8-bit sRGB image at working scale, or raise RejectedImage."""
    fmt = sniff(data)
    allowed = ", ".join(_HUMAN[f] for f in limits.allowed_formats)
    if fmt is None:
        raise RejectedImage.because("not_a_photo", f"unknown signature {data[:12].hex()}",
                                    kind="not_a_photo", allowed=allowed)
    if fmt not in limits.allowed_formats:
        raise RejectedImage.because("format_not_accepted", f"format {fmt} not in ALLOWED_FORMATS",
                                    kind="format_not_accepted", format=_HUMAN[fmt],
                                    allowed=allowed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=_PIL_FORMATS[fmt])
            original_size = im.size
            _check_pixels(im, limits.max_pixels)
            if fmt == "jpeg":
                # let the JPEG decoder scale by 1/2, 1/4, 1/8 while decoding: less work, less memory
                im.draft("RGB", _draft_size(im, limits.target))
            im.load()
            image = _normalise(im, limits.target)
    except RejectedImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RejectedImage.because("pixel_bomb", f"{type(exc).__name__}: {exc}",
                                    kind="too_many_pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError,
            TypeError, KeyError, ZeroDivisionError) as exc:
        # Pillow reports corrupt and truncated data with a zoo of exception types.
        kind = _corrupt_kind(exc)
        raise RejectedImage.because(kind, f"{type(exc).__name__}: {exc}", kind=kind,
                                    format=_HUMAN[fmt]) from None
    return Photo(data=data, format=fmt, original_size=original_size, image=image)


def _corrupt_kind(exc: Exception) -> str:
    """``incomplete`` or ``damaged`` (also the sentence's key) for a file Pillow could not
    decode."""
    text = str(exc).lower()
    if "truncated" in text or "premature end" in text or isinstance(exc, EOFError):
        return "incomplete"
    return "damaged"


def _check_pixels(im: Image.Image, max_pixels: int) -> None:
    width, height = im.size
    if width <= 0 or height <= 0:
        raise RejectedImage.because("no_pixels", f"size {im.size}", kind="damaged")
    if width * height > max_pixels:
        raise RejectedImage.because(
            "too_many_pixels", f"{width * height} > MAX_PIXELS {max_pixels}",
            kind="too_many_pixels", width=width, height=height,
            megapixels=f"{max_pixels / 1e6:.0f}")


def _draft_size(im: Image.Image, target: tuple[int, int]) -> tuple[int, int]:
    # draft keeps both sides >= the request; ask for the target's longer side on both so that a
    # rotated (EXIF) photo still has enough pixels after it is turned upright.
    side = max(target)
    return (min(side, im.size[0]), min(side, im.size[1]))


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION, 1)
    except Exception:  # malformed EXIF is common; an unreadable tag means "as stored"
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _normalise(im: Image.Image, target: tuple[int, int]) -> Image.Image:
    orientation = _orientation(im)
    icc = im.info.get("icc_profile")
    image = _working_scale(_to_8bit(im), target)
    if image is not im:
        # the decoded draft (24 MB for a 24 MP JPEG) goes before the next copies are made: two
        # workers decoding at once are the daemon's peak memory
        im.close()
    if icc:
        image = _to_srgb(image, icc)
    for method in _TRANSPOSE.get(orientation, ()):
        image = image.transpose(method)
    if image.mode == "RGBA" and image.getchannel("A").getextrema()[0] == 255:
        image = image.convert("RGB")  # fully opaque alpha carries nothing
    return image


def _to_8bit(im: Image.Image) -> Image.Image:
    """RGB or RGBA, 8 bits per channel, whatever the file held."""
    mode = im.mode
    if mode in ("RGB", "RGBA"):
        if mode == "RGB" and "transparency" in im.info:
            return im.convert("RGBA")
        return im
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: scale to 8 bits before L, or everything clips to white
        grey = im.convert("I").point(lambda v: v / 256).convert("L")
        if "transparency" in im.info:
            # point() on an "I" image only takes linear functions: compare in numpy instead
            key = np.asarray(im.convert("I")) == im.info["transparency"]
            alpha = Image.fromarray(np.where(key, 0, 255).astype(np.uint8))
            return Image.merge("RGBA", (grey, grey, grey, alpha))
        return grey.convert("RGB")
    if mode in ("P", "PA", "LA", "La", "RGBa", "1", "L") and (
            "transparency" in im.info or "A" in mode or "a" in mode):
        return im.convert("RGBA")
    if mode == "CMYK":
        return im.convert("RGB") if not im.info.get("icc_profile") else im
    return im.convert("RGB")


def _working_scale(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Shrink very large images (PNG and WebP have no draft) to twice the output size at most."""
    limit = 2 * max(target)
    if max(image.size) <= limit:
        return image
    factor = max(image.size) // limit
    if factor >= 2:
        image = image.reduce(factor)  # fast integer box reduction
    if max(image.size) > limit:
        scale = limit / max(image.size)
        size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        image = _resize_in_bands(image, size)
    return image


def _resize_in_bands(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image.resize(size, BILINEAR)`` a band of rows at a time: the same picture, every pixel
    within one level (where a band's edge falls between source rows, the filter's weights round
    differently in the last bit).

    Pillow resizes in two passes and holds the first pass whole: for a 3000×2000 draft going to
    2400×1600, a 19 MB buffer beside the source and the result. Band by band it is ~2 MB. The
    filter reads past each band's box from the whole source, so the bands join seamlessly."""
    out = Image.new(image.mode, size)
    step = image.size[1] / size[1]
    for top in range(0, size[1], _RESIZE_BAND_ROWS):
        bottom = min(size[1], top + _RESIZE_BAND_ROWS)
        band = image.resize((size[0], bottom - top), Image.Resampling.BILINEAR,
                            box=(0, top * step, image.size[0], bottom * step))
        out.paste(band, (0, top))
    return out


def _to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    """Convert from the embedded profile to sRGB; a broken profile is ignored, not fatal."""
    try:
        out_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        if image.mode not in ("RGB", "RGBA", "CMYK", "L"):
            image = image.convert("RGB")
        transform = _transform(icc, image.mode, out_mode)
        if transform is None:
            return image
        if image.mode == out_mode:  # the working copy is ours: no second copy of the photo
            ImageCms.applyTransform(image, transform, inPlace=True)
            return image
        converted = ImageCms.applyTransform(image, transform)
        return converted if converted is not None else image
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image.convert("RGBA" if image.mode == "RGBA" else "RGB")


@functools.lru_cache(maxsize=32)
def _transform(icc: bytes, in_mode: str, out_mode: str) -> ImageCms.ImageCmsTransform | None:
    """The transform from ``icc`` to sRGB, built once per profile (NOCACHE: shared by threads),
    or None when it moves no value by more than 1: most photos carry plain sRGB, and applying
    a transform costs more than decoding the photo."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    transform = ImageCms.buildTransform(source, _SRGB, in_mode, out_mode,
                                        flags=ImageCms.Flags.NOCACHE)
    if in_mode == "RGB" and out_mode == "RGB":
        moved = ImageChops.difference(ImageCms.applyTransform(_PROBE, transform), _PROBE)
        if max(high for _, high in moved.getextrema()) <= 1:
            return None
    return transform
