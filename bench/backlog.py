"""Section 6: a backlog at start, polling cost, and fairness between shops (issue 12).

a. 100 000 tiny photos waiting when the daemon starts (10 shops × 100 folders × 100 files, made
   here, never committed): READY (``/readyz`` answers 200) and the first thumbnail, from the
   moment the process is started; targets ≤ 5 s each.
b. Peak RSS of the daemon with 100 000 waiting against 100 waiting, each from start to
   ``RSS_WINDOW`` seconds after its first thumbnail (model loaded, photos being processed);
   target ratio ≤ 1.3.
c. One idle poll of ``FolderPoller`` over those 100 000 files in 1 000 folders, in this process:
   CPU per poll, and as a share of one core at the default ``POLL_INTERVAL`` (2 s); target < 5 %.
d. 5 000 photos waiting in ``loja-a``; one photo dropped into ``loja-b`` once the daemon is busy:
   its latency against ``SETTLE_SECONDS`` + 2 × one photo's processing time (the median of the
   daemon's own per-photo times).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import urllib.request
from pathlib import Path

import inputs
from daemon import Daemon, RssSampler
from report import median, mib, table

SUMMARY: dict[str, float] = {}
RSS_WINDOW = 10.0  # seconds after the first thumbnail over which RSS is still sampled
SETTLE = 1.0


def _fill(inbox: Path, count: int, data: bytes, shops: int = 10, folders: int = 100) -> None:
    per_folder = max(1, count // (shops * folders))
    made = 0
    for s in range(shops):
        for f in range(folders):
            folder = inbox / f"loja-{s}" / f"f{f:03}"
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(per_folder):
                (folder / f"{n:04}.jpg").write_bytes(data)
                made += 1
                if made >= count:
                    return


def _ready(d: Daemon) -> bool:
    try:
        url = json.loads((d.inbox / ".thumbgen" / "http.json").read_text())["url"]
        with urllib.request.urlopen(f"{url}/readyz", timeout=1) as resp:
            return resp.status == 200
    except (OSError, ValueError, KeyError):
        return False


def _start_timed(d: Daemon, count: int) -> tuple[float, float, int]:
    """(seconds to READY, seconds to the first thumbnail, peak RSS from start to RSS_WINDOW
    after the first thumbnail)."""
    started = time.monotonic()
    d.start(timeout=120)
    ready = first = None
    with RssSampler(d) as sampler:
        while time.monotonic() - started < 180 and first is None:
            d.check_alive()
            if ready is None and _ready(d):
                ready = time.monotonic() - started
            if first is None and d.finished():
                first = time.monotonic() - started
            time.sleep(0.02)
        time.sleep(RSS_WINDOW)
        peak = sampler.peak
    return (ready or float("nan"), first or float("nan"), peak)


def start_backlog(big: int = 100_000, small: int = 100) -> list[str]:
    tiny = inputs.tiny_jpeg()
    rows, measured = [], {}
    for count in (small, big):
        with Daemon(f"backlog{count}", SETTLE_SECONDS=SETTLE, OUTPUT_SIZE=64,
                    RESCAN_INTERVAL=3600) as d:
            made = time.monotonic()
            _fill(d.inbox, count, tiny)
            made = time.monotonic() - made
            measured[count] = _start_timed(d, count)
            if count == big:
                poll_lines = idle_poll(d.inbox)
        ready, first, peak = measured[count]
        rows.append((f"{count} waiting", f"{ready:.1f} s", f"{first:.1f} s", mib(peak),
                     f"(made in {made:.0f} s)"))
    ratio = measured[big][2] / max(measured[small][2], 1)
    SUMMARY.update(ready_s=measured[big][0], first_s=measured[big][1], rss_ratio=ratio)
    return [f"  tiny JPEGs in 10 shops × 100 folders, SETTLE_SECONDS={SETTLE:g}, WORKERS=2",
            table(["at start", "READY", "first thumbnail",
                   f"peak RSS to first + {RSS_WINDOW:.0f} s", ""], rows),
            f"  targets with {big}: READY ≤ 5 s → {measured[big][0]:.1f} s, first thumbnail "
            f"≤ 5 s → {measured[big][1]:.1f} s, RSS ≤ 1.3 × → {ratio:.2f} ×", ""] + poll_lines


def idle_poll(inbox: Path, interval: float = 2.0, rounds: int = 20) -> list[str]:
    from watcher.poll import FolderPoller

    found: list[object] = []
    poller = FolderPoller(inbox, found.append)
    poller.prime()
    cpu, wall = [], []
    for _ in range(rounds):
        c, w = time.process_time(), time.perf_counter()
        poller.poll()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    files = sum(len(files) for _, _, files in os.walk(inbox))
    share = median(cpu) / interval
    SUMMARY["poll_share"] = share
    return [f"  idle poll over {files} files in {len(poller)} folders (in this process, "
            f"{rounds} polls): CPU {median(cpu) * 1000:.1f} ms, wall {median(wall) * 1000:.1f} ms "
            f"per poll → {share:.2%} of one core at POLL_INTERVAL={interval:g} s (target < 5 %); "
            f"{len(found)} file(s) suggested (nothing changed: 0 expected)"]


def fairness(backlog: int = 5000) -> list[str]:
    tiny = inputs.tiny_jpeg()
    with Daemon("fair", SETTLE_SECONDS=SETTLE, OUTPUT_SIZE=64, RESCAN_INTERVAL=3600) as d:
        shop = d.inbox / "loja-a"
        shop.mkdir()
        for n in range(backlog):
            (shop / f"{n:05}.jpg").write_bytes(tiny)
        d.start(timeout=120)
        deadline = time.monotonic() + 120
        while d.finished() < 6 and time.monotonic() < deadline:
            d.check_alive()
            time.sleep(0.05)
        (d.staging / "single.jpg").write_bytes(tiny)
        (d.inbox / "loja-b").mkdir()
        dropped = time.monotonic()
        os.rename(d.staging / "single.jpg", d.inbox / "loja-b" / "single.jpg")
        thumb = d.output / "loja-b" / "single.jpg"
        while not thumb.exists() and time.monotonic() - dropped < 120:
            d.check_alive()
            time.sleep(0.01)
        latency = time.monotonic() - dropped
        left = sum(1 for _ in shop.iterdir())
        times = [float(r["duration_ms"]) / 1000 for r in d.records() if "duration_ms" in r]
    one = statistics.median(times) if times else float("nan")
    target = SETTLE + 2 * one
    SUMMARY.update(fair_latency=latency, fair_target=target)
    return [f"  {backlog} tiny photos waiting in loja-a, one dropped into loja-b; SETTLE_SECONDS="
            f"{SETTLE:g}, WORKERS=2; {left} still waiting in loja-a when it was done",
            table(["loja-b's photo", "value"], [
                ("latency, drop → thumbnail", f"{latency:.2f} s"),
                ("one photo's processing (median)", f"{one:.2f} s"),
                ("target: SETTLE + 2 × processing", f"{target:.2f} s"),
                ("", "met" if latency <= target else "NOT met")])]


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    for line in start_backlog(big=20_000 if quick else 100_000):
        print(line, flush=True)
    for line in fairness(backlog=1000 if quick else 5000):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
