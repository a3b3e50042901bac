"""Deterministic bench inputs made from tests/data/products/*.jpg, kept in bench/.data/.

Camera-like photos: each sample is cover-cropped to 4:3 (or 3:4 for portrait samples), upscaled to
12 MP (4000×3000) or 24 MP (6000×4000) and given luminance grain, so that the JPEG is as large and
as slow to decode as a real camera file (~2–4 MB at 12 MP, ~5–8 MB at 24 MP). Embedded ICC
profiles of the samples are kept, as cameras and phones keep theirs. The same index always gives
the same bytes; files are made once and reused while their recipe (``RECIPE``) is unchanged.
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parent
DATA = ROOT / ".data"
SAMPLES = ROOT.parent / "tests" / "data" / "products"
RECIPE = {"version": 1, "grain_sigma": 4.0, "quality": 92}
SIZES = {"12mp": (4000, 3000), "24mp": (6000, 4000)}


def samples() -> list[Path]:
    return sorted(SAMPLES.glob("*.jpg"))


def photos(kind: str, count: int) -> list[Path]:
    """``count`` camera-like JPEGs of ``kind`` (12mp, 24mp), made if missing or stale."""
    folder = DATA / kind
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / ".recipe.json"
    recipe = {**RECIPE, "size": SIZES[kind], "samples": [p.name for p in samples()]}
    recipe = json.loads(json.dumps(recipe))  # tuples become lists, as read back
    if not stamp.is_file() or json.loads(stamp.read_text()) != recipe:
        for old in folder.glob("*.jpg"):
            old.unlink()
        stamp.write_text(json.dumps(recipe))
    sources = samples()
    wanted = [(i, sources[i % len(sources)]) for i in range(count)]
    paths = [folder / f"{i:03d}-{src.stem}.jpg" for i, src in wanted]
    missing = [(i, src, SIZES[kind], path) for (i, src), path in zip(wanted, paths)
               if not path.is_file()]
    if missing:
        print(f"  making {len(missing)} {kind} input photo(s) in {folder} (once) …", flush=True)
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(_make, missing))
    return paths


def _make(job: tuple[int, Path, tuple[int, int], Path]) -> None:
    index, source, (long_side, short_side), path = job
    with Image.open(source) as im:
        icc = im.info.get("icc_profile")
        rgb = im.convert("RGB")
    size = (long_side, short_side) if rgb.width >= rgb.height else (short_side, long_side)
    if (index // len(samples())) % 2:
        rgb = ImageOps.mirror(rgb)  # the second round of each sample is not a copy of the first
    centring = (0.5 + 0.04 * ((index % 5) - 2), 0.5)
    big = ImageOps.fit(rgb, size, Image.Resampling.LANCZOS, centering=centring)
    rng = np.random.default_rng(1000 + index)
    grain = rng.standard_normal((size[1], size[0]), dtype=np.float32)
    grain *= RECIPE["grain_sigma"]
    pixels = np.asarray(big, dtype=np.int16)
    pixels += grain.astype(np.int16)[..., np.newaxis]
    np.clip(pixels, 0, 255, out=pixels)
    out = Image.fromarray(pixels.astype(np.uint8))
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=RECIPE["quality"], icc_profile=icc)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def tiny_jpeg() -> bytes:
    """A ~1 KB JPEG of a product (for bursts): small, but a real photo the daemon processes."""
    with Image.open(samples()[0]) as im:
        small = ImageOps.fit(im.convert("RGB"), (64, 48), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=75)
    return buf.getvalue()


def describe(paths: list[Path]) -> str:
    sizes = [p.stat().st_size for p in paths]
    return (f"{len(paths)} files, {min(sizes) / 1e6:.1f}–{max(sizes) / 1e6:.1f} MB "
            f"(median {sorted(sizes)[len(sizes) // 2] / 1e6:.1f} MB)")
