"""What ``refine`` does to the masks, and what it costs.

For every photo of the cut-out set (rembg's example photos with its U²-Net reference cut-outs,
MIT: ``../shared/testdata/cutouts`` when it is there, else ``tests/data/cutouts``) the real local
model makes the mask, with ``LocalRemover`` as the daemon runs it. "before" is that mask as compose
gets it today (the model's 320×320 answer stretched bilinearly to the photo); "after" is
``refine(mask, photo)``. Each is compared with the reference cut-out's alpha:

  IoU   both cut at 128
  haze  share of the reference's background (alpha < 128) that the mask leaves at 13–127 (%)
  MAD   mean absolute difference, 0–255

Then refine's cost on one core (CPU time, median) at the working sizes validate makes for a
1200×1200 output: 2000×1500 (a 12 MP 4:3 JPEG drafted to half), 2000×2000 and 2400×1600 (the
largest: a 24 MP 3:2 photo). Nothing is asserted; targets are reported as met or not.

Run: .venv/bin/python bench/masks.py [--cutouts DIR] [--rounds N] [--save DIR]
``--save`` writes, per photo, the photo on green through the mask before and after, side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from report import table
from watcher import config
from watcher.stages import validate
from watcher.stages.refine import refine, touching_edges
from watcher.stages.removal.local import LocalRemover

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "testdata" / "cutouts"
OWN = REPO / "tests" / "data" / "cutouts"
TIMING_PHOTO = REPO / "tests" / "data" / "products" / "t-shirts_man_t-shirt_01.jpg"
WORKING_SIZES = ((2000, 1500), (2000, 2000), (2400, 1600))
HAZE_TARGET, MS_TARGET = 0.3, 60.0


def scores(mask: Image.Image, reference: np.ndarray) -> tuple[float, float, float]:
    """IoU at 128, haze (%), MAD of ``mask`` against the reference alpha."""
    alpha = np.asarray(mask)
    ours, theirs = alpha >= 128, reference >= 128
    iou = (ours & theirs).sum() / max(1, (ours | theirs).sum())
    background = alpha[~theirs]
    haze = ((background >= 13) & (background <= 127)).sum() / max(1, background.size) * 100
    mad = np.abs(alpha.astype(np.int16) - reference).mean()
    return float(iou), float(haze), float(mad)


def quality(folder: Path, remover: LocalRemover, limits: validate.Limits,
            save: Path | None) -> list[str]:
    rows, before_all, after_all, worst = [], [], [], 0.0
    for reference_path in sorted(folder.glob("*.out.png")):
        photo_path = reference_path.with_name(reference_path.name.removesuffix(".out.png") + ".jpg")
        photo = validate.decode(validate.read_input(photo_path, limits.max_bytes), limits).image
        reference = np.asarray(Image.open(reference_path).getchannel("A").resize(photo.size))
        raw = remover.mask(photo)
        refined = refine(raw, photo)
        before, after = scores(raw, reference), scores(refined, reference)
        before_all.append(before)
        after_all.append(after)
        worst = min(worst, after[0] - before[0])
        edges = ",".join(sorted(touching_edges(refined))) or "-"
        rows.append((photo_path.stem, f"{photo.size[0]}×{photo.size[1]}",
                     *_pair(before, after), edges))
        if save is not None:
            _save(save / f"{photo_path.stem}.png", photo, raw, refined)
    mean_before, mean_after = np.mean(before_all, axis=0), np.mean(after_all, axis=0)
    rows.append(("mean", "", *_pair(tuple(mean_before), tuple(mean_after)), ""))
    lines = [table(("photo", "size", "IoU before", "IoU after", "haze % before", "haze % after",
                    "MAD before", "MAD after", "touches"), rows)]
    lines.append(f"  haze ≤ {HAZE_TARGET} % (mean): {mean_after[1]:.3f} % — "
                 f"{'met' if mean_after[1] <= HAZE_TARGET else 'NOT met'}; "
                 f"IoU mean not lower: {mean_before[0]:.4f} → {mean_after[0]:.4f} — "
                 f"{'met' if mean_after[0] >= mean_before[0] else 'NOT met'}; "
                 f"worst IoU change {worst:+.4f} (≥ -0.01: {'met' if worst >= -0.01 else 'NOT met'})")
    return lines


def _pair(before: tuple[float, ...], after: tuple[float, ...]) -> list[str]:
    return [f"{before[0]:.4f}", f"{after[0]:.4f}", f"{before[1]:.2f}", f"{after[1]:.2f}",
            f"{before[2]:.1f}", f"{after[2]:.1f}"]


def _save(path: Path, photo: Image.Image, *masks: Image.Image) -> None:
    tiles = []
    for mask in masks:
        tile = Image.new("RGB", photo.size, (0, 150, 0))
        tile.paste(photo, (0, 0), mask)
        tiles.append(tile)
    sheet = Image.new("RGB", (photo.width * len(tiles) + 8 * (len(tiles) - 1), photo.height),
                      (255, 0, 255))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (i * (photo.width + 8), 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def cost(remover: LocalRemover, rounds: int) -> list[str]:
    """refine and touching_edges on core 0, at each working size, on a real model mask."""
    base = Image.open(TIMING_PHOTO).convert("RGB")
    rows = []
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    try:
        for size in WORKING_SIZES:
            photo = base.resize(size, Image.Resampling.BICUBIC)
            mask = remover.mask(photo)
            refine(mask, photo)  # warm-up
            wall, cpu, edges = [], [], []
            for _ in range(rounds):
                c0, t0 = time.thread_time(), time.perf_counter()
                refined = refine(mask, photo)
                wall.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.thread_time() - c0) * 1000)
                t1 = time.perf_counter()
                touching_edges(refined)
                edges.append((time.perf_counter() - t1) * 1000)
            rows.append((f"{size[0]}×{size[1]}", statistics.median(cpu), min(cpu),
                         statistics.median(wall), statistics.median(edges)))
    finally:
        os.sched_setaffinity(0, before)
    at_target = next(r for r in rows if r[0] == "2000×1500")[1]
    return [f"  {TIMING_PHOTO.name} stretched to each size, its own model mask; {rounds} rounds, "
            "core 0 only",
            table(("working size", "refine CPU ms (median)", "min", "wall ms (median)",
                   "touching_edges ms"), rows),
            f"  refine ≤ {MS_TARGET:.0f} ms at 2000×1500: {at_target:.1f} ms — "
            f"{'met' if at_target <= MS_TARGET else 'NOT met'}"]


def section(rounds: int, cutouts: Path | None = None) -> list[str]:
    """The quality table and the cost lines, for ``bench/run.py``."""
    settings = config.load(config_file=Path(os.devnull), env={})
    limits = validate.Limits(settings.max_file_size, settings.max_pixels,
                             settings.allowed_formats, settings.output_size)
    remover = LocalRemover(settings.model_path, threads=1)
    remover.load()
    try:
        folder = cutouts or (SHARED if SHARED.is_dir() else OWN)
        return ([f"  references: {folder}"] + list(quality(folder, remover, limits, None))
                + [""] + list(cost(remover, rounds)))
    finally:
        remover.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cutouts", type=Path, default=SHARED if SHARED.is_dir() else OWN,
                        help="folder of NAME.jpg + NAME.out.png pairs (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=15, help="timing rounds per size")
    parser.add_argument("--save", type=Path, help="write before/after sheets into this folder")
    args = parser.parse_args(argv)
    settings = config.load(config_file=Path(os.devnull), env={})
    limits = validate.Limits(settings.max_file_size, settings.max_pixels,
                             settings.allowed_formats, settings.output_size)
    remover = LocalRemover(settings.model_path, threads=1)
    remover.load()
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"refine bench — {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {os.cpu_count()} cores, "
          f"load average {' '.join(load)}")
    print(f"\n== masks before and after refine: {args.cutouts} ==", flush=True)
    for line in quality(args.cutouts, remover, limits, args.save):
        print(line, flush=True)
    print("\n== refine's cost, one core ==", flush=True)
    for line in cost(remover, args.rounds):
        print(line, flush=True)
    remover.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
