"""Sections 3 and 4: the daemon's memory, sampled every 50 ms (RSS of it and its children).

3. Peak RSS with 2 workers on 24 MP photos (6000×4000), dropped at once.
4. A burst of 10 000 small JPEGs dropped into a running daemon, against a burst of 100: the queue
   holds paths, never images, so memory may grow only by the path bookkeeping (the settle table
   and the bounded work queue). The 10 000 files are not all processed: after a fixed window the
   daemon is stopped (SIGTERM) and the tree removed, to keep the bench short.
"""

from __future__ import annotations

import time
from pathlib import Path

import inputs
from daemon import Daemon, RssSampler
from report import median, mib, table

SUMMARY: dict[str, float] = {}
BURST_WINDOW = 20.0  # seconds the 10 000-file backlog is watched


def peak_rss(photos: list[Path], command: list[str] | None = None) -> list[str]:
    with Daemon("rss24", command) as d:
        d.start()
        time.sleep(0.5)
        idle = d.rss()
        with RssSampler(d) as sampler:
            start = d.drop(photos)
            end = d.wait_finished(len(photos), 300)
            time.sleep(1.0)
        after = d.rss()
        records = d.records()
    if end is None:
        return [f"  timed out: {len(records)} of {len(photos)} finished"]
    peak = sampler.peak
    SUMMARY["peak_rss"] = peak
    outcomes: dict[str, int] = {}
    for r in records:
        outcomes[str(r["outcome"])] = outcomes.get(str(r["outcome"]), 0) + 1
    rows = [("daemon started, idle (model not loaded yet)", mib(idle)),
            ("peak while processing (target ≤ 500 MB)", mib(peak)),
            ("peak − idle", mib(peak - idle)),
            ("after the run, idle again", mib(after))]
    stage_ms = {s: median(float(r["stages"][s]) for r in records if s in r["stages"])
                for s in ("validate", "remove", "compose", "publish")}
    return [f"  {len(photos)} photos of 24 MP dropped at once, WORKERS=2; outcomes: {outcomes}; "
            f"{len(photos) / (end - start):.1f} images/s",
            table(["RSS (daemon + children)", "value"], rows),
            "  stage medians at 24 MP (ms): " + ", ".join(f"{k} {v:.0f}"
                                                          for k, v in stage_ms.items()),
            f"\n  target: peak ≤ 500 MB → {mib(peak)} ({'met' if peak <= 500 * 1024**2 else 'NOT met'})"]


def _stage_files(d: Daemon, data: bytes, prefix: str, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        path = d.staging / f"{prefix}-{i:05d}.jpg"
        path.write_bytes(data)
        paths.append(path)
    return paths


def burst(big: int = 10_000, small: int = 100) -> list[str]:
    tiny = inputs.tiny_jpeg()
    with Daemon("burst", SETTLE_SECONDS=1) as d:
        d.start()
        d.move_in(_stage_files(d, tiny, "warm", 4))
        d.wait_finished(4, 60)
        time.sleep(1.0)
        with RssSampler(d) as sampler:
            time.sleep(1.0)
            base = median(rss for _, rss in sampler.samples)

            staged = _stage_files(d, tiny, "small", small)
            t_small = d.move_in(staged)
            done_small = d.wait_finished(4 + small, 90) or time.monotonic()
            time.sleep(1.0)
            small_peak = max(sampler.between(t_small, time.monotonic()))
            after_small = d.rss()

            staged = _stage_files(d, tiny, "big", big)
            before_big = d.finished()
            t_big = d.move_in(staged)
            depths = []
            while time.monotonic() - t_big < BURST_WINDOW:
                d.check_alive()
                depth = d.metric("thumbgen_queue_depth")
                if depth is not None:
                    depths.append(depth)
                time.sleep(1.0)
            big_samples = sampler.between(t_big, time.monotonic())
            processed = d.finished() - before_big
        stop_start = time.monotonic()
        code = d.stop()
        stop_seconds = time.monotonic() - stop_start
    big_peak = max(big_samples)
    end_rss = big_samples[-1]
    per_file = (big_peak - small_peak) / (big - small)
    SUMMARY["burst_growth"] = big_peak - small_peak
    SUMMARY["bytes_per_file"] = per_file
    rows = [
        ("idle, after warm-up", mib(base), ""),
        (f"burst of {small}: peak", mib(small_peak),
         f"all {small} done in {done_small - t_small:.1f} s"),
        (f"after the {small}", mib(after_small), ""),
        (f"burst of {big}: peak in {BURST_WINDOW:.0f} s", mib(big_peak),
         f"{processed} done meanwhile; queue depth max {max(depths, default=float('nan')):.0f}"),
        (f"burst of {big}: at the end of the window", mib(end_rss),
         f"queue depth {depths[-1] if depths else float('nan'):.0f}"),
    ]
    return [
        f"  ~{len(tiny)}-byte JPEGs renamed into the inbox of a running daemon (WORKERS=2, "
        "SETTLE_SECONDS=1)",
        table(["RSS (daemon + children)", "value", "note"], rows),
        f"  growth {big}-file vs {small}-file burst: {mib(big_peak - small_peak)} → "
        f"{per_file:.0f} bytes per queued file (path bookkeeping)",
        f"  SIGTERM with the backlog waiting: exit {code} in {stop_seconds:.1f} s",
    ]
