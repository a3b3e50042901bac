"""A burst of 10 000 photos of 24 MP copied at once into a running daemon: peak RSS, bounded in time.

The 24 MP photos (6000×4000 or 4000×6000) are made from the sample photos: ``--distinct`` of them
(18 by default: each sample, and its mirror image), each copied under many names into the staging
folder, then all renamed into the inbox, so 10 000 files of 24 MP wait at once. They are smooth
upscales saved at JPEG quality 70 (~0.6–1.5 MB; the camera-like grain of ``bench/inputs.py``
would make them ~5.7 MB, 57 GB for 10 000): the memory a photo takes once decoded is the same.
Copies, not hard links: the daemon rejects a file with more than one link (``validate.py``,
reason ``hard_link``). Nothing is committed; the tree (~10 GB) is removed after.

Processing 10 000 photos of 24 MP takes hours on 2 cores, so the run is bounded: after
``--minutes`` the daemon is stopped (SIGTERM, the backlog still waiting). Reported: RSS idle, the
peak while all 10 000 wait and the first N are processed (sampled every 100 ms, children
included), N and the rate, the deepest queue, and the stop. Target: peak RSS ≤ 500 MB.

Run: ``.venv/bin/python bench/burst.py [--minutes 10] [--count 10000] [--distinct 18]``; also
section 10 of ``bench/run.py`` (bounded to a few minutes there).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import inputs  # noqa: E402
from daemon import Daemon, RssSampler  # noqa: E402
from report import mib, table  # noqa: E402

TARGET = 500 * 1024**2
SUMMARY: dict[str, float] = {}
SAMPLE_EVERY = 5.0  # seconds between reads of the queue and the finished count
RECIPE = {"version": 1, "size": [6000, 4000], "quality": 70}
FOLDER = inputs.DATA / "24mp-burst"


def photos(count: int) -> list[Path]:
    """``count`` distinct 24 MP JPEGs (each sample, then its mirror image), made once."""
    FOLDER.mkdir(parents=True, exist_ok=True)
    stamp = FOLDER / ".recipe.json"
    if not stamp.is_file() or json.loads(stamp.read_text()) != RECIPE:
        for old in FOLDER.glob("*.jpg"):
            old.unlink()
        stamp.write_text(json.dumps(RECIPE))
    sources = inputs.samples()
    paths = []
    for i in range(count):
        source = sources[i % len(sources)]
        path = FOLDER / f"{i:03d}-{source.stem}.jpg"
        if not path.is_file():
            with Image.open(source) as im:
                rgb = im.convert("RGB")
            if (i // len(sources)) % 2:
                rgb = ImageOps.mirror(rgb)
            long_side, short_side = RECIPE["size"]
            size = (long_side, short_side) if rgb.width >= rgb.height else (short_side, long_side)
            big = ImageOps.fit(rgb, size, Image.Resampling.BICUBIC)
            big.save(path.with_suffix(".tmp"), "JPEG", quality=RECIPE["quality"])
            path.with_suffix(".tmp").replace(path)
        paths.append(path)
    return paths


def run(count: int = 10_000, distinct: int = 18, minutes: float = 10.0) -> list[str]:
    distinct_photos = photos(distinct)
    need = sum(distinct_photos[i % distinct].stat().st_size for i in range(count))
    free = shutil.disk_usage(inputs.DATA).free
    if need > free - 5 * 1024**3:
        return [f"  skipped: {count} copies need {need / 1e9:.1f} GB and {free / 1e9:.1f} GB "
                "are free (5 GB kept for others)"]
    lines = [f"  inputs: {inputs.describe(distinct_photos)} (24 MP, quality "
             f"{RECIPE['quality']}), copied under {count} names ({need / 1e9:.1f} GB); "
             "WORKERS=2, REMOVAL_BACKEND=local, SETTLE_SECONDS=1"]
    with Daemon("burst24", SETTLE_SECONDS=1) as d:
        d.start()
        time.sleep(1.0)
        idle = d.rss()
        copy_start = time.monotonic()
        staged = []
        for i in range(count):
            source = distinct_photos[i % len(distinct_photos)]
            path = d.staging / f"b{i:05d}-{source.name}"
            shutil.copyfile(source, path)
            staged.append(path)
        lines.append(f"  copies made in {time.monotonic() - copy_start:.0f} s")
        with RssSampler(d, interval=0.1) as sampler:
            start = d.move_in(staged)
            renamed = time.monotonic() - start
            first: float | None = None
            depths: list[float] = []
            progress: list[tuple[float, int]] = []
            while (now := time.monotonic()) - start < minutes * 60:
                d.check_alive()
                done = d.finished()
                if first is None and done:
                    first = now - start
                progress.append((now - start, done))
                depth = d.metric("thumbgen_queue_depth")
                if depth is not None:
                    depths.append(depth)
                time.sleep(SAMPLE_EVERY)
            processed = d.finished()
            window = time.monotonic() - start
            end_rss = d.rss()
        stop_start = time.monotonic()
        code = d.stop()
        stop_seconds = time.monotonic() - stop_start
        outcomes: dict[str, int] = {}
        for r in d.records():
            outcomes[str(r["outcome"])] = outcomes.get(str(r["outcome"]), 0) + 1
    peak = sampler.peak
    SUMMARY.update(burst24_peak=peak, burst24_done=processed, burst24_count=count)
    steady = _rate(progress)
    rows = [
        ("daemon started, idle", mib(idle), ""),
        (f"peak, {count} waiting and the first {processed} processed", mib(peak),
         f"target ≤ {mib(TARGET)}: {'met' if peak <= TARGET else 'NOT met'}"),
        (f"at the end of the {window / 60:.1f} min window", mib(end_rss),
         f"{count - processed} still waiting"),
    ]
    lines += [
        table(["RSS (daemon + children)", "value", "note"], rows),
        f"  {count} names renamed in within {renamed:.1f} s; first finished after "
        f"{first if first is not None else float('nan'):.1f} s; deepest queue "
        f"{max(depths, default=float('nan')):.0f}",
        f"  processed {processed} in {window:.0f} s: {processed / window:.2f} images/s overall, "
        f"{steady:.2f} images/s after the first minute; outcomes {outcomes}",
        f"  at that rate all {count} would take {count / steady / 3600:.1f} h" if steady > 0
        else "  no steady rate",
        f"  SIGTERM with {count - processed} waiting: exit {code} in {stop_seconds:.1f} s; "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
    ]
    return lines


def _rate(progress: list[tuple[float, int]]) -> float:
    """Images per second from the first minute on (the model's load and warm-up left out)."""
    later = [(t, n) for t, n in progress if t >= 60.0]
    while len(later) > 1 and later[-2][1] == later[-1][1]:
        later.pop()  # the backlog was done: the idle end is no rate
    if len(later) < 2 or later[-1][0] == later[0][0]:
        return float("nan")
    return (later[-1][1] - later[0][1]) / (later[-1][0] - later[0][0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="window (default 10)")
    parser.add_argument("--count", type=int, default=10_000, help="names dropped (default 10000)")
    parser.add_argument("--distinct", type=int, default=18, help="distinct photos (default 18)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    print(f"burst of {args.count} photos of 24 MP — {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
          f"{args.minutes:g} min window, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    for line in run(args.count, args.distinct, args.minutes):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
