"""Section 1: the compose stage on 12 MP JPEGs, one core, against vipsthumbnail and naive Pillow.

thumbgen's path is the real code: ``read_input`` → ``decode`` (JPEG draft, EXIF, ICC) → the
background canvas → ``compose`` (trim, scale, paste) → ``encode`` (JPEG q90) → write the file.
The mask is given: one per photo, precomputed with a cheap threshold outside the timing, so the
model is not part of this number (section 2 times it).

Fairness: everything runs on core 0 (this process via ``sched_setaffinity``, vipsthumbnail via
``taskset -c 0`` and ``VIPS_CONCURRENCY=1``). vipsthumbnail's process start-up (~0.1 s of CPU
here: it loads every libvips module) is not thumbnail work, so its time per image is the
difference between one run on K copies and one run on 1 copy, divided by K−1. Tools are
interleaved file by file, so a burst of load from other processes hits all of them alike. Wall
time and CPU time are both kept: on a busy machine CPU time is the steadier of the two.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from report import median, quantile, table
from watcher import config, encoding
from watcher.stages import compose as compose_stage
from watcher.stages import validate

VIPS_COPIES = 4  # one vipsthumbnail run on this many names, minus a run on one, removes start-up
CORE = 0
SUMMARY: dict[str, tuple[float, float]] = {}


@dataclass
class Timings:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    parts: dict[str, list[float]] = field(default_factory=dict)

    def add(self, wall: float, cpu: float) -> None:
        self.wall.append(wall * 1000)
        self.cpu.append(cpu * 1000)

    def part(self, name: str, seconds: float) -> None:
        self.parts.setdefault(name, []).append(seconds * 1000)


class ThumbgenCompose:
    """thumbgen's compose path with the production defaults (OUTPUT_SIZE, quality, fill ratio)."""

    def __init__(self, backgrounds: Path) -> None:
        s = config.load(config_file=Path(os.devnull), env={})
        self.limits = validate.Limits(s.max_file_size, s.max_pixels, s.allowed_formats,
                                      s.output_size)
        self.output = compose_stage.Output(s.output_size, s.output_format, s.output_quality,
                                           s.fill_ratio)
        self.backgrounds = compose_stage.Backgrounds(backgrounds, s.output_size)
        self.masks: dict[Path, Image.Image] = {}

    def prepare(self, path: Path) -> None:
        photo = validate.decode(validate.read_input(path, self.limits.max_bytes), self.limits)
        self.masks[path] = threshold_mask(photo.image)

    def run(self, path: Path, out: Path, t: Timings) -> None:
        clock = time.perf_counter
        a = clock()
        data = validate.read_input(path, self.limits.max_bytes)
        photo = validate.decode(data, self.limits)
        b = clock()
        canvas = self.backgrounds.canvas(PurePosixPath(path.name))
        c = clock()
        image = compose_stage.compose(photo.image, self.masks[path], canvas,
                                      self.output.fill_ratio)
        d = clock()
        encoded = encoding.encode(image, self.output)
        e = clock()
        out.write_bytes(encoded)
        f = clock()
        for name, seconds in (("read+decode (draft)", b - a), ("background canvas", c - b),
                              ("compose: trim+scale+paste", d - c), ("encode JPEG q90", e - d),
                              ("write file", f - e)):
            t.part(name, seconds)


def threshold_mask(image: Image.Image) -> Image.Image:
    """A cheap product mask: pixels far from the border's median colour, at the image's size."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    distance = np.abs(rgb - np.median(border, axis=0).astype(np.int16)).max(axis=2)
    return Image.fromarray(np.where(distance > 40, 255, 0).astype(np.uint8), "L")


def naive_pillow(path: Path, out: Path, size: tuple[int, int]) -> None:
    """What a first attempt looks like: full decode, LANCZOS to fit the box, save q90."""
    with Image.open(path) as im:
        im.load()
        scale = min(size[0] / im.width, size[1] / im.height)
        small = im.resize((round(im.width * scale), round(im.height * scale)),
                          Image.Resampling.LANCZOS)
    small.save(out, "JPEG", quality=90)


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _vips(names: list[Path], out_dir: Path, size: tuple[int, int]) -> tuple[float, float]:
    cmd = ["taskset", "-c", str(CORE), "vipsthumbnail", *map(str, names),
           "--size", f"{size[0]}x{size[1]}",
           "-o", f"{out_dir.resolve()}/%s.jpg[Q=90,subsample-mode=on,strip]"]  # relative: to the input
    env = {**os.environ, "VIPS_CONCURRENCY": "1"}
    cpu0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, _children_cpu() - cpu0


def _timed(fn: Callable[[], None]) -> tuple[float, float]:
    cpu0, t0 = time.thread_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.thread_time() - cpu0


def run(photos: list[Path], backgrounds: Path, rounds: int) -> list[str]:
    """Measure and return the printed lines."""
    if shutil.which("vipsthumbnail") is None:
        return ["  vipsthumbnail is missing: run `make syspkgs EXTRA_SYS_DEPS=libvips-tools`"]
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CORE})
    try:
        return _measure(photos, backgrounds, rounds)
    finally:
        os.sched_setaffinity(0, before)


def _measure(photos: list[Path], backgrounds: Path, rounds: int) -> list[str]:
    tg = ThumbgenCompose(backgrounds)
    size = tg.output.size
    results = {name: Timings() for name in ("thumbgen", "vips_process", "vips", "naive")}
    with tempfile.TemporaryDirectory(prefix="compose-", dir=Path(__file__).parent / ".data") as tmp:
        work = Path(tmp)
        links = work / "links"
        links.mkdir()
        copies: dict[Path, list[Path]] = {}
        for photo in photos:
            tg.prepare(photo)
            photo.read_bytes()  # in the page cache for every tool alike
            names = []
            for k in range(VIPS_COPIES):  # distinct names: no libvips cache hit between copies
                link = links / f"{photo.stem}-{k}.jpg"
                link.symlink_to(photo)
                names.append(link)
            copies[photo] = names
        tg.run(photos[0], work / "warm.jpg", Timings())  # background cached, code paths warm
        for _ in range(rounds):
            for photo in photos:
                out = work / f"{photo.stem}.out.jpg"
                results["thumbgen"].add(*_timed(lambda: tg.run(photo, out, results["thumbgen"])))
                results["naive"].add(*_timed(lambda: naive_pillow(photo, out, size)))
                one = _vips(copies[photo][:1], work, size)
                many = _vips(copies[photo], work, size)
                results["vips_process"].add(*one)
                results["vips"].add((many[0] - one[0]) / (VIPS_COPIES - 1),
                                    (many[1] - one[1]) / (VIPS_COPIES - 1))
    return _report(results, len(photos), rounds)


def _report(results: dict[str, Timings], files: int, rounds: int) -> list[str]:
    ref_wall = median(results["vips"].wall)
    ref_cpu = median(results["vips"].cpu)
    labels = {
        "thumbgen": "thumbgen compose path (draft, mask given)",
        "vips": "vipsthumbnail, per image (start-up removed)",
        "vips_process": "vipsthumbnail, one process per image",
        "naive": "naive Pillow (full decode, LANCZOS)",
    }
    rows = []
    for key in ("thumbgen", "vips", "vips_process", "naive"):
        t = results[key]
        rows.append((labels[key], median(t.wall), f"{quantile(t.wall, .25):.0f}–"
                     f"{quantile(t.wall, .75):.0f}", f"{median(t.wall) / ref_wall:.2f}",
                     median(t.cpu), f"{median(t.cpu) / ref_cpu:.2f}"))
    lines = [f"  {files} photos × {rounds} rounds, core {CORE} only; ratio = median / "
             "vipsthumbnail's per-image median",
             table(["tool", "wall ms", "p25–p75", "ratio", "CPU ms", "CPU ratio"], rows),
             "", "  thumbgen compose path, by step (median ms, wall):"]
    parts = results["thumbgen"].parts
    lines.append(table(["step", "ms"], [(k, median(v)) for k, v in parts.items()]))
    ratio = median(results["thumbgen"].wall) / ref_wall
    cpu_ratio = median(results["thumbgen"].cpu) / ref_cpu
    lines.append(f"\n  target: thumbgen ≤ 0.8 × vipsthumbnail → wall {ratio:.2f} "
                 f"({'met' if ratio <= 0.8 else 'NOT met'}), CPU {cpu_ratio:.2f} "
                 f"({'met' if cpu_ratio <= 0.8 else 'NOT met'})")
    SUMMARY["compose"] = (ratio, cpu_ratio)
    return lines
