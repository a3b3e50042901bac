"""Section 2: the whole pipeline with the local model, 12 MP photos, the real daemon on 2 cores.

``thumbgen run`` (WORKERS=2, REMOVAL_BACKEND=local) on a fresh tree: two warm-up files first (the
model loads on first use, the background is cached), then N photos renamed into the inbox at
once; the clock runs from the first rename to the N-th finished file. SETTLE_SECONDS (0.2 s) is
inside that time, as it is for a user. Per-stage medians come from the daemon's own JSON log
(one line per file with ``stages``: wall ms of validate, remove, compose, publish).

For reference the model alone: ``LocalRemover.mask`` on a decoded working image, one core; and
the model's own ceiling on both cores (``model_ceiling``): nothing but onnxruntime runs, so no
pipeline built around this model can finish more images per second than that.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime
from pathlib import Path


from daemon import Daemon
from report import median, quantile, table
from watcher import config
from watcher.stages import validate
from watcher.stages.removal import local
from watcher.stages.removal.engines import mask_image, preprocess

STAGES = ("validate", "remove", "compose", "publish")
SUMMARY: dict[str, float] = {}


def model_alone(photos: list[Path], rounds: int) -> list[str]:
    """``LocalRemover.mask`` on core 0: the whole call, and its three parts."""
    settings = config.load(config_file=Path(os.devnull), env={})
    limits = validate.Limits(settings.max_file_size, settings.max_pixels,
                             settings.allowed_formats, settings.output_size)
    images = [validate.decode(validate.read_input(p, limits.max_bytes), limits).image
              for p in photos]
    remover = local.LocalRemover(settings.model_path, threads=1)
    remover.load()
    engine = remover.engine()  # the bench times the parts too
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {0})
    whole: list[float] = []
    cpu: list[float] = []
    parts: dict[str, list[float]] = {"pre-process (resize to 320², normalise)": [],
                                     "onnxruntime run (1 thread)": [],
                                     "post-process (min-max, resize to image)": []}
    try:
        remover.mask(images[0])  # first run allocates onnxruntime's buffers
        for _ in range(rounds):
            for image in images:
                c0, t0 = time.thread_time(), time.perf_counter()
                remover.mask(image)
                whole.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.thread_time() - c0) * 1000)
                a = time.perf_counter()
                batch = preprocess(image)
                b = time.perf_counter()
                pred = engine.run(batch)
                c = time.perf_counter()
                mask_image(pred, image.size)
                d = time.perf_counter()
                for name, seconds in zip(parts, (b - a, c - b, d - c)):
                    parts[name].append(seconds * 1000)
    finally:
        os.sched_setaffinity(0, before)
        remover.close()
    SUMMARY["model_ms"] = median(whole)
    sizes = sorted({im.size for im in images})
    rows = [("LocalRemover.mask, whole call", median(whole), median(cpu))]
    rows += [(f"  {name}", median(v), "") for name, v in parts.items()]
    return [f"  {len(images)} working images ({', '.join(f'{w}×{h}' for w, h in sizes)}) × "
            f"{rounds} rounds, core 0 only",
            table(["model alone", "wall ms", "CPU ms"], rows)]


def model_ceiling(photos: list[Path], seconds: float = 8.0) -> list[str]:
    """Model runs per second on all cores with nothing else running, in the two ways the cores
    can be shared: one run at a time on every core (the daemon's way: it bounds memory), and one
    single-threaded run per core at once (more memory). Pre-processing is done beforehand."""
    settings = config.load(config_file=Path(os.devnull), env={})
    limits = validate.Limits(settings.max_file_size, settings.max_pixels,
                             settings.allowed_formats, settings.output_size)
    batches = [preprocess(  # the bench isolates the onnxruntime run
        validate.decode(validate.read_input(p, limits.max_bytes), limits).image) for p in photos]
    cores = len(os.sched_getaffinity(0))
    rows = []
    for label, threads, at_once in (
            (f"one run at a time, {cores} threads (the daemon)", cores, 1),
            (f"{cores} runs at once, 1 thread each", 1, cores)):
        remover = local.LocalRemover(settings.model_path, threads=threads)
        engine = remover.engine()  # runs without the remover's lock
        engine.run(batches[0])  # first run allocates the buffers
        counts = [0] * at_once
        deadline = time.perf_counter() + seconds

        def loop(slot: int) -> None:
            i = slot
            while time.perf_counter() < deadline:
                engine.run(batches[i % len(batches)])
                counts[slot] += 1
                i += at_once

        start = time.perf_counter()
        threads_ = [threading.Thread(target=loop, args=(k,)) for k in range(at_once)]
        for t in threads_:
            t.start()
        for t in threads_:
            t.join()
        rate = sum(counts) / (time.perf_counter() - start)
        rows.append((label, rate, 1000 * at_once / rate))
        remover.close()
    best = max(rate for _, rate, _ in rows)
    SUMMARY["model_ceiling"] = best
    return [f"  the model alone on all {cores} cores, nothing else running, {seconds:.0f} s each:",
            table(["way of sharing the cores", "runs/s", "ms per run"], rows),
            f"  ceiling for any pipeline around this model on this machine: {best:.2f} "
            f"images/s (target ≥ 8: {'reachable' if best >= 8 else 'out of reach'})"]


def daemon_run(photos: list[Path], warm: list[Path],
               command: list[str] | None = None) -> list[str]:
    with Daemon("pipeline", command) as d:
        d.start()
        d.drop(warm, names=[f"warm-{i}.jpg" for i in range(len(warm))])
        if d.wait_finished(len(warm), 120) is None:
            return ["  the daemon did not finish the warm-up files:", d.console()[-2000:]]
        start = d.drop(photos)
        end = d.wait_finished(len(warm) + len(photos), 300)
        if end is None:
            return [f"  timed out: {d.finished() - len(warm)} of {len(photos)} finished",
                    d.console()[-2000:]]
        time.sleep(0.5)  # the last log lines are written by loguru's queue thread
        records = [r for r in d.records() if not str(r.get("file", "")).startswith("warm-")]
    elapsed = end - start
    rate = len(photos) / elapsed
    SUMMARY["images_per_s"] = rate
    outcomes: dict[str, int] = {}
    for r in records:
        outcomes[str(r["outcome"])] = outcomes.get(str(r["outcome"]), 0) + 1
    times = sorted(datetime.fromisoformat(str(r["time"])).timestamp() for r in records)
    steady = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else float("nan")
    rows = []
    for stage in STAGES:
        values = [float(r["stages"][stage]) for r in records if stage in r["stages"]]
        rows.append((stage, median(values), quantile(values, 0.9)))
    totals = [float(r["duration_ms"]) for r in records if "duration_ms" in r]
    rows.append(("whole file (claim → published)", median(totals), quantile(totals, 0.9)))
    cpu_ms = sum(median(float(r["stages"][s]) for r in records if s in r["stages"])
                 for s in ("validate", "remove", "compose"))
    lines = [
        f"  {len(photos)} photos dropped at once, WORKERS=2, SETTLE_SECONDS=0.2, after 2 warm-up "
        f"files; outcomes: {outcomes}",
        table(["", "value"], [
            ("drop → last thumbnail (s)", round(elapsed, 2)),
            ("images/s, drop → last (target ≥ 8)", round(rate, 2)),
            ("images/s, first → last done (steady)", round(steady, 2)),
        ]),
        "",
        "  per-stage wall time in the daemon (from logs/app.log, 2 workers side by side):",
        table(["stage", "median ms", "p90 ms"], rows),
        f"  validate + remove + compose medians = {cpu_ms:.0f} ms of wall time per image; with "
        f"2 workers that bounds the rate at ~{2000 / cpu_ms:.1f} images/s",
        f"\n  target: ≥ 8 images/s → {rate:.2f} ({'met' if rate >= 8 else 'NOT met'})",
    ]
    return lines
