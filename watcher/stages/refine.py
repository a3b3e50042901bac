"""Refine: the remover's mask made into one that marketplaces accept, at the photo's full size.

What comes out is exactly 0 on the background and exactly 255 on the product, with a soft edge of
one or two pixels that follows the photo's own edge. Amazon and Mercado Livre want every pixel
around the product to be (255, 255, 255): a mask of 1–12 there tints the white, and the model's
haze (a ghost of hair below a cap, a smear on the table) shows as a grey cloud.

The same steps serve every remover, remote or local, whatever the size of its mask:

1. Everything is decided on a grid: the photo reduced by an integer factor to at most
   ``_GRID`` pixels on its long side (cheap to compute, and still finer than the local model's
   320×320 answer).
2. Islands: pieces of mask well away from the main subject and small beside it (debris, a shoulder
   under a cap) are dropped; small pieces close to it (a strap the model broke) are kept.
3. Holes: a hole inside the subject where the model never said "background" with confidence is
   a dip in its confidence (a logo, a lens), and is filled; one where it did (the inside of a mug
   handle, the gap between an arm and a body) is real background and stays.
4. A contrast curve sends the model's values below ``_LOW`` to exactly 0 and above ``_HIGH`` to
   exactly 1: the haze goes here, before the next step could bring any back at a dark or
   bright pixel of the photo.
5. Edges: a fast guided filter (He & Sun, 2015) fits, around every grid cell, the mask as a
   linear function of the photo's grey; those two coefficients are smooth, so they are computed
   on the grid and evaluated at full resolution against the photo's own grey: the edge lands on
   the photo's edge, not on the model's 320-pixel blur. A last, steep ramp folded into the same
   coefficients keeps that edge about two pixels wide.

Full-resolution work is done only in the grid cells where the result can be neither 0 nor 255
(about a tenth of the photo), in uint8 and float32; everything else is grid-sized (~0.75 MB an
array at 2000×1500). Cost (``bench/masks.py``): 30–40 ms of one core at 2000×1500, and at its
peak ~9 MB of arrays at 2400×1600, the 3.8 MB result included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

# The grid's long side, at most. 512 keeps every grid step below ~5 photo pixels at the working
# sizes (≤ 2400) while a grid array stays under 1 MB.
_GRID = 512
# Guided filter window (2r+1 grid cells) and regularisation. The window must span the model's
# uncertain band, ~1.5 of its own 320 pixels: 5 cells of ≥ 1/512 of the long side do.
_RADIUS = 2
_EPS = 1e-3
# Contrast curve on the model's 0..1 scale: below _LOW is background, above _HIGH is product.
# Set a little below 0.5 because U²-Net-p draws its products thinner than U²-Net does
# (bench/masks.py: IoU against U²-Net's cut-outs is highest there, haze still ~0.2 %).
_LOW, _HIGH = 0.38, 0.58
# The edge's own ramp, on the filtered mask (0..1): about two photo pixels wide.
_EDGE_LOW, _EDGE_HIGH = 0.4, 0.6
# Islands, as shares of the main subject's core (its pixels ≥ 0.5): kept anywhere from
# _KEEP_ANYWHERE (a second product); kept from _KEEP_NEAR when no farther from the subject's box
# than _NEAR of the subject's longer side (a piece of strap); dropped otherwise.
_KEEP_ANYWHERE = 0.10
_KEEP_NEAR = 0.002
_NEAR = 0.05
# Holes: filled when the model's lowest value in them is at least _FILL_FLOOR (it never said
# "background" there), or when they are pinholes (≤ _PINHOLE of the subject).
_FILL_FLOOR = 0.3
_PINHOLE = 0.0002
# Grid rows per band of full-resolution work: bounds the band's temporary arrays (≤ 2.6 MB
# when every cell of a 2400-pixel-wide band needs work, ~0.5 MB as it is).
_BAND = 16
# touching_edges: how deep a band along each edge is looked at (share of the photo's side), and
# how long a run of opaque pixels in it must be (share of the subject's own extent along it).
_EDGE_DEPTH = 0.005
_EDGE_RUN = 0.2


def refine(mask: Image.Image, photo: Image.Image) -> Image.Image:
    """The mask a marketplace accepts: an ``L`` image of ``photo.size``.

    ``mask``: a remover's ``L`` mask at any size (stretched to the photo when its shape differs:
    a remote app may answer at a lower resolution); ``photo``: the ``RGB`` photo at working size,
    as validate decoded it. Exactly 0 on the background and 255 on the product, soft only along
    the edge; islands dropped and holes filled as the module docstring says.
    """
    if mask.mode != "L" or photo.mode != "RGB":
        raise ValueError(f"refine takes an L mask and an RGB photo, not {mask.mode}/{photo.mode}")
    step = max(1, math.ceil(max(photo.size) / _GRID))
    guide_image = photo.reduce(step) if step > 1 else photo
    guide = np.asarray(guide_image.convert("L"), dtype=np.float32) * np.float32(1 / 255)
    grid_size = guide_image.size
    if mask.size == photo.size and step > 1:
        small = mask.reduce(step)  # the same cells as the guide's
    elif mask.size != grid_size:
        small = mask.resize(grid_size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    else:
        small = mask
    p = np.array(small, dtype=np.float32) * np.float32(1 / 255)
    _drop_islands(p)
    _fill_holes(p)
    # the contrast curve, on the grid, before the edges are placed: what stays below _LOW must
    # not come back through the filter at a dark or bright pixel of the photo
    p -= np.float32(_LOW)
    p *= np.float32(1 / (_HIGH - _LOW))
    np.clip(p, 0, 1, out=p)
    slope, offset = _curve_coefficients(guide, p)
    return _render(slope, offset, photo, step)


def touching_edges(mask: Image.Image) -> frozenset[str]:
    """The edges of the photo that cut the subject: some of ``"top"``, ``"bottom"``, ``"left"``,
    ``"right"``.

    An edge counts when, in a band along it ``_EDGE_DEPTH`` of the photo deep, opaque pixels
    (≥ 128) form one unbroken run at least ``_EDGE_RUN`` as long as the subject's own extent
    along that edge: a shirt cut at the waist touches "bottom"; a few stray pixels, or a
    fingertip of a subject that mostly floats, do not.
    """
    width, height = mask.size
    step = max(1, math.ceil(max(width, height) / _GRID))
    opaque = np.asarray(mask.reduce(step) if step > 1 else mask) >= 128
    columns, rows = np.flatnonzero(opaque.any(axis=0)), np.flatnonzero(opaque.any(axis=1))
    if not len(columns):
        return frozenset()
    # the subject's extent in photo pixels, from the grid (within a cell: plenty for a share)
    across = (columns[-1] - columns[0] + 1) * step
    along = (rows[-1] - rows[0] + 1) * step
    depth_y = max(1, round(height * _EDGE_DEPTH))
    depth_x = max(1, round(width * _EDGE_DEPTH))
    bands = {
        "top": ((0, 0, width, depth_y), 0, across),
        "bottom": ((0, height - depth_y, width, height), 0, across),
        "left": ((0, 0, depth_x, height), 1, along),
        "right": ((width - depth_x, 0, width, height), 1, along),
    }
    touched = set()
    for edge, (crop, axis, extent) in bands.items():
        band = (np.asarray(mask.crop(crop)) >= 128).any(axis=axis)
        if _longest_run(band) >= max(1, _EDGE_RUN * extent):
            touched.add(edge)
    return frozenset(touched)


def _longest_run(flags: np.ndarray) -> int:
    change = np.diff(flags.astype(np.int8), prepend=0, append=0)
    starts, ends = np.flatnonzero(change == 1), np.flatnonzero(change == -1)
    return int((ends - starts).max()) if len(starts) else 0


# -- islands and holes, on the grid ------------------------------------------------------------


@dataclass
class _Runs:
    """Horizontal runs of True in a boolean grid: the unit of connected-component labelling."""

    rows: np.ndarray
    starts: np.ndarray
    ends: np.ndarray  # exclusive
    width: int

    @classmethod
    def of(cls, binary: np.ndarray) -> _Runs:
        height, width = binary.shape
        framed = np.zeros((height, width + 2), np.int8)
        framed[:, 1:-1] = binary
        change = np.diff(framed, axis=1)
        rows, starts = np.nonzero(change == 1)
        ends = np.nonzero(change == -1)[1]
        return cls(rows, starts, ends, width)

    def __len__(self) -> int:
        return len(self.rows)

    def components(self, diagonal: bool) -> np.ndarray:
        """A label per run (the smallest run index in its component), 8- or 4-connected."""
        n, stride = len(self), self.width + 2
        touch = 0 if diagonal else 1
        # runs of the next row that overlap this one (keys order runs by row, then column)
        first = np.searchsorted(self.rows * stride + self.ends,
                                (self.rows + 1) * stride + self.starts + touch, "left")
        last = np.searchsorted(self.rows * stride + self.starts,
                               (self.rows + 1) * stride + self.ends - touch, "right")
        counts = np.maximum(last - first, 0)
        below = np.repeat(first - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        above = np.repeat(np.arange(n), counts)
        labels = np.arange(n)
        while True:  # hook each root under the smaller one, then jump to the roots
            a, b = labels[above], labels[below]
            differ = a != b
            if not differ.any():
                return labels
            np.minimum.at(labels, np.maximum(a[differ], b[differ]),
                          np.minimum(a[differ], b[differ]))
            while not np.array_equal(jumped := labels[labels], labels):
                labels = jumped

    def paint(self, grid: np.ndarray, which: np.ndarray, value: float) -> None:
        """Set every pixel of the runs selected by ``which`` to ``value``."""
        lengths = (self.ends - self.starts)[which]
        if not len(lengths):
            return
        begin = (self.rows * grid.shape[1] + self.starts)[which]
        index = np.repeat(begin - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        grid.reshape(-1)[index] = value


def _drop_islands(p: np.ndarray) -> None:
    """Zero the pieces of mask that are small beside the main subject and not close to it."""
    runs = _Runs.of(p > _LOW)
    if not len(runs):
        return
    n = len(runs)
    labels = runs.components(diagonal=True)
    core = np.zeros((p.shape[0], p.shape[1] + 1), np.int32)
    np.cumsum(p >= 0.5, axis=1, out=core[:, 1:])
    area = np.bincount(labels, weights=core[runs.rows, runs.ends] - core[runs.rows, runs.starts],
                       minlength=n)
    main = int(area.argmax())
    if area[main] == 0:
        return
    top, bottom = np.full(n, p.shape[0]), np.full(n, -1)
    left, right = np.full(n, p.shape[1]), np.full(n, -1)
    np.minimum.at(top, labels, runs.rows)
    np.maximum.at(bottom, labels, runs.rows)
    np.minimum.at(left, labels, runs.starts)
    np.maximum.at(right, labels, runs.ends - 1)
    gap = np.maximum(np.maximum(top - bottom[main], top[main] - bottom),
                     np.maximum(left - right[main], left[main] - right))
    near = gap <= _NEAR * max(bottom[main] - top[main], right[main] - left[main])
    keep = (area >= _KEEP_ANYWHERE * area[main]) | (near & (area >= _KEEP_NEAR * area[main]))
    runs.paint(p, ~keep[labels], 0.0)


def _fill_holes(p: np.ndarray) -> None:
    """Set to 1 the holes in the subject where the model never said background, and pinholes."""
    runs = _Runs.of(p < 0.5)
    if not len(runs):
        return
    n, (height, width) = len(runs), p.shape
    labels = runs.components(diagonal=False)
    lengths = runs.ends - runs.starts
    area = np.bincount(labels, weights=lengths, minlength=n)
    outside = np.zeros(n, bool)
    border = (runs.rows == 0) | (runs.rows == height - 1) | (runs.starts == 0) | (runs.ends == width)
    outside[labels[border]] = True
    # each run's lowest value: a reduceat from its start also spans the pixels up to the next
    # run, but those are all ≥ 0.5, above any value that matters here
    lowest_in_run = np.minimum.reduceat(p.reshape(-1), runs.rows * width + runs.starts)
    lowest = np.full(n, np.inf, np.float32)
    np.minimum.at(lowest, labels, lowest_in_run)
    subject = float((p >= 0.5).sum())
    fill = ~outside & ((lowest >= _FILL_FLOOR) | (area <= _PINHOLE * subject))
    runs.paint(p, fill[labels], 1.0)


# -- edges and the curve -------------------------------------------------------------------------


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)² window, the border repeated outwards: shifted sums, which beat a
    cumulative sum for windows this small and need one temporary array."""
    down = x.copy()
    for i in range(1, r + 1):
        down[i:] += x[:-i]
        down[:i] += x[0]
        down[:-i] += x[i:]
        down[-i:] += x[-1]
    out = down.copy()
    for i in range(1, r + 1):
        out[:, i:] += down[:, :-i]
        out[:, :i] += down[:, :1]
        out[:, :-i] += down[:, i:]
        out[:, -i:] += down[:, -1:]
    out *= np.float32(1 / (2 * r + 1) ** 2)
    return out


def _curve_coefficients(guide: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per grid cell, ``slope`` and ``offset`` such that the final alpha of a photo pixel of grey
    ``g`` (0..255) is ``clip(slope * g + offset, 0, 255)``: the guided filter's linear model of
    the (already curved) mask, with the edge's own ramp, _EDGE_LOW.._EDGE_HIGH, folded in."""
    # in place where it can be: each grid array is ~0.75 MB at 2000×1500
    mean_g, mean_p = _box(guide, _RADIUS), _box(p, _RADIUS)
    a = _box(guide * p, _RADIUS)
    a -= mean_g * mean_p  # covariance of grey and mask
    variance = _box(guide * guide, _RADIUS)
    variance -= mean_g * mean_g
    variance += np.float32(_EPS)
    a /= variance
    del variance
    mean_p -= a * mean_g  # now b, the model's offset
    del mean_g
    gain = np.float32(1 / (_EDGE_HIGH - _EDGE_LOW))
    slope = _box(a, _RADIUS)
    slope *= gain  # a was fitted on grey 0..1; slope takes grey 0..255
    offset = _box(mean_p, _RADIUS)
    offset -= np.float32(_EDGE_LOW)
    offset *= gain * 255
    return slope, offset


def _bilinear_weights(step: int) -> np.ndarray:
    """(9, step²): how each pixel of a grid cell mixes the 3×3 cells around it, the same
    bilinear upscale as Pillow's (pixel centres at (i + 0.5) / step - 0.5 in grid units)."""
    offsets = (np.arange(step) + 0.5) / step - 0.5
    w = np.zeros((step, 3))
    w[:, 1] = 1 - np.abs(offsets)
    w[offsets < 0, 0] = -offsets[offsets < 0]
    w[offsets >= 0, 2] = offsets[offsets >= 0]
    return np.einsum("yi,xj->ijyx", w, w).reshape(9, step * step).astype(np.float32)


def _dilate(x: np.ndarray) -> np.ndarray:
    """3×3 dilation of a boolean grid."""
    y = x.copy()
    y[1:] |= x[:-1]
    y[:-1] |= x[1:]
    z = y.copy()
    z[:, 1:] |= y[:, :-1]
    z[:, :-1] |= y[:, 1:]
    return z


def _settled(slope: np.ndarray, offset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grid cells whose every pixel is surely 0, and those surely 255, whatever the photo."""
    # a pixel's value mixes the coefficients of the 3×3 cells around its own (convexly), and its
    # grey is within 0..255: bound the value per cell, then over the neighbourhood
    at_white = slope * 255
    at_white += offset
    all_zero = ~_dilate(np.maximum(offset, at_white) >= 0.5)
    all_full = ~_dilate(np.minimum(offset, at_white, out=at_white) < 254.5)
    return all_zero, all_full


def _render(slope: np.ndarray, offset: np.ndarray, photo: Image.Image, step: int) -> Image.Image:
    """The full-size mask, one band of grid rows at a time: 0 or 255 by cell where it cannot be
    anything else, computed pixel by pixel against the photo's grey in the other cells."""
    (width, height), (rows, cols) = photo.size, slope.shape
    all_zero, all_full = _settled(slope, offset)
    todo = ~(all_zero | all_full)
    settled = np.where(all_full, np.uint8(255), np.uint8(0))
    weights = _bilinear_weights(step)
    # each pixel's 3×3 cells, as flat indices into the grid; the border cell repeated outwards
    oy, ox = np.divmod(np.arange(9), 3)
    dy, dx = np.divmod(np.arange(step * step), step)
    out = np.empty((height, width), np.uint8)
    for r0 in range(0, rows, _BAND):
        y0, y1 = r0 * step, min(height, (r0 + _BAND) * step)
        band = out[y0:y1]
        band[:] = np.repeat(np.repeat(settled[r0:r0 + _BAND], step, axis=0)[:y1 - y0], step,
                            axis=1)[:, :width]
        cy, cx = np.nonzero(todo[r0:r0 + _BAND])
        if not len(cy):
            continue
        grey = np.asarray(photo.crop((0, y0, width, y1)).convert("L")).reshape(-1)
        cells = (np.clip(cy[:, None] + r0 + oy - 1, 0, rows - 1) * cols
                 + np.clip(cx[:, None] + ox - 1, 0, cols - 1))
        slopes = np.take(slope, cells) @ weights  # (cells, step²): bilinear, per pixel
        values = np.take(offset, cells) @ weights
        pixels = (cy * (step * width) + cx * step)[:, None] + (dy * width + dx)  # in the band
        if (cy[-1] + 1) * step > y1 - y0 or (cx.max() + 1) * step > width:  # cut by the edge
            inside = ((cy[:, None] * step + dy) < y1 - y0) & ((cx[:, None] * step + dx) < width)
            pixels, slopes, values = pixels[inside], slopes[inside], values[inside]
        slopes *= np.take(grey, pixels)
        values += slopes
        values += 0.5  # round, not truncate
        np.clip(values, 0, 255, out=values)
        band.reshape(-1)[pixels] = values
    return Image.fromarray(out)


__all__ = ["refine", "touching_edges"]
