"""Makes backgrounds/default.jpg: a soft, light, warm-grey studio backdrop.

Run from the repository root: ``.venv/bin/python tools/make_default_background.py``.
The result is deterministic (fixed noise seed), so re-running it gives the same file.

Why it looks like this: product cut-outs sit on it, so it must stay quiet. A slightly warm grey
reads as "studio" rather than "empty"; a centre a little lighter than the edges (a wide radial
falloff, its centre just above the middle, as a lit paper sweep looks) keeps the eye on the
product. A smooth gradient quantised to 8 bits shows bands, and JPEG's 8×8 blocks make them
worse; a faint luminance-only noise added before rounding breaks both up.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 1200
CENTRE_RGB = (247.0, 245.0, 242.0)  # almost white, a touch warm
EDGE_RGB = (224.0, 221.0, 216.0)  # the same hue, darker, toward the corners
CENTRE_XY = (0.5, 0.44)  # as fractions of the side: the light sits just above the middle
NOISE_SIGMA = 0.9  # in 8-bit levels: enough to dither, too little to see
QUALITY = 92
SEED = 20240601


def render(size: int = SIZE, seed: int = SEED) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)
    dist = np.hypot(xx - CENTRE_XY[0], yy - CENTRE_XY[1]) / np.hypot(0.5, 0.56)
    # smoothstep over the whole radius: no visible edge where the falloff starts or ends
    t = np.clip(dist, 0.0, 1.0)
    falloff = t * t * (3.0 - 2.0 * t)
    centre, edge = np.array(CENTRE_RGB), np.array(EDGE_RGB)
    rgb = centre + (edge - centre) * falloff[..., np.newaxis]
    noise = np.random.default_rng(seed).normal(0.0, NOISE_SIGMA, (size, size, 1))
    out = np.clip(np.rint(rgb + noise), 0, 255).astype(np.uint8)
    return Image.fromarray(out)


def main(argv: list[str]) -> int:
    dest = Path(argv[1]) if len(argv) > 1 else Path("backgrounds/default.jpg")
    dest.parent.mkdir(parents=True, exist_ok=True)
    render().save(dest, "JPEG", quality=QUALITY, optimize=True, subsampling="4:4:4")
    print(f"{dest}: {dest.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
