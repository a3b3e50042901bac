"""Encoding a finished picture into the bytes of its file: JPEG, WebP, AVIF through Pillow; PNG
through a writer of our own for the large RGB(A) pictures that dominate its cost.

Why a PNG writer of our own: a 12 MP cut-out (48 MB of RGBA) took ~0.8-1.0 s of CPU in Pillow at
``compress_level=1``, about as long as the whole render of one thumbnail. Half of it is Pillow
choosing a filter for every row (four filters tried, Paeth among them, at any level), half zlib.
Here every row gets the Up filter (one vectorised subtraction) and the stream is deflated by ISA-L
(``isal``) at level 1, 3-4× faster than zlib at the same level: ~0.1 s for the same picture, the
file as small as Pillow's level 1 within a few per cent (measured in ``bench/outputs.py``).
The picture is filtered and deflated in strips of rows, so the extra memory is a few MB, not a
copy of the whole picture.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from typing import Protocol

import numpy as np
from isal import isal_zlib
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPES = {"RGB": 2, "RGBA": 6, "L": 0, "LA": 4}  # 8 bits per channel each
_UP = 2  # PNG filter type: each byte minus the byte above it
_STRIP_BYTES = 4 << 20  # raw bytes filtered and deflated at a time
_IDAT_BYTES = 1 << 20  # compressed bytes per IDAT chunk
PNG_LEVEL = 1
_LITTLE_ENDIAN = sys.byteorder == "little"  # where an RGBA pixel's alpha is, as a uint32


class Encoding(Protocol):
    format: str
    quality: int


def encode(image: Image.Image, output: Encoding) -> bytes:
    """The file's bytes for ``image`` in ``output.format`` at ``output.quality``."""
    if output.format == "png":
        return png(image)
    buf = io.BytesIO()
    if output.format == "jpeg":
        # a white-background marketplace output keeps full-resolution colour: with 4:2:0 the
        # edge's ringing spreads over 16×16 blocks of the white, with 4:4:4 over 8×8 at most
        pure_white = getattr(output, "pure_white", False)
        image.save(buf, "JPEG", quality=output.quality, optimize=False, progressive=False,
                   subsampling="4:4:4" if pure_white else "4:2:0")
    elif output.format == "webp":
        image.save(buf, "WEBP", quality=output.quality, method=4)
    elif output.format == "avif":
        image.save(buf, "AVIF", quality=output.quality, speed=8)
    else:
        raise ValueError(f"no encoder for format {output.format!r}")
    return buf.getvalue()


def png(image: Image.Image, level: int = PNG_LEVEL) -> bytes:
    """A non-interlaced 8-bit PNG of ``image`` (RGB, RGBA, L or LA; other modes through Pillow).

    A fully transparent RGBA pixel is written as (0, 0, 0, 0), as rembg writes it and libwebp
    does by default: its colour cannot be seen, and a photo's grain under it made the file a
    third bigger and slower. No colour chunk is written, as Pillow writes none for a picture
    without a profile: the pictures given here are already sRGB."""
    colour_type = _COLOUR_TYPES.get(image.mode)
    if colour_type is None:
        buf = io.BytesIO()
        image.save(buf, "PNG", compress_level=level)
        return buf.getvalue()
    width, height = image.size
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    parts = [PNG_SIGNATURE, _chunk(b"IHDR", header)]
    parts += [_chunk(b"IDAT", piece) for piece in _split(_deflated_rows(image, level))]
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def _deflated_rows(image: Image.Image, level: int) -> bytes:
    """The zlib stream of every row, each prefixed with the Up filter's type byte."""
    width, height = image.size
    row_bytes = width * len(image.mode)
    strip = max(1, _STRIP_BYTES // max(1, row_bytes))
    deflate = isal_zlib.compressobj(level)
    out: list[bytes] = []
    above = np.zeros(row_bytes, dtype=np.uint8)  # the row "above" the first is zeros
    for top in range(0, height, strip):
        bottom = min(height, top + strip)
        rows = np.frombuffer(image.crop((0, top, width, bottom)).tobytes(), dtype=np.uint8)
        if image.mode == "RGBA":
            rows = _clear_transparent(rows)
        rows = rows.reshape(bottom - top, row_bytes)
        filtered = np.empty((bottom - top, row_bytes + 1), dtype=np.uint8)
        filtered[:, 0] = _UP
        np.subtract(rows[0], above, out=filtered[0, 1:])  # uint8: wraps modulo 256, as PNG's
        np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
        above = rows[-1].copy()
        out.append(deflate.compress(filtered.tobytes()))
    out.append(deflate.flush())
    return b"".join(out)


def _clear_transparent(rgba: np.ndarray) -> np.ndarray:
    """RGBA bytes with every pixel whose alpha is 0 made (0, 0, 0, 0): one pass over whole
    pixels (uint32), not four strided passes over bytes."""
    pixels = rgba.view(np.uint32)
    alpha = pixels >> 24 if _LITTLE_ENDIAN else pixels & 0xFF
    return np.multiply(pixels, alpha != 0, dtype=np.uint32).view(np.uint8)


def _split(data: bytes) -> list[bytes]:
    return [data[i:i + _IDAT_BYTES] for i in range(0, len(data), _IDAT_BYTES)] or [b""]


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


__all__ = ["Encoding", "PNG_SIGNATURE", "encode", "png"]
