"""Section 8: a backlog at start, polling cost, and fairness between shops (issue 12).

a. 100 000 tiny photos waiting when the daemon starts (10 shops × 100 folders × 100 files, made
   here, never committed): READY (``/readyz`` answers 200) and the first thumbnail (the first
   published file in the output), from the moment the process is started; targets ≤ 5 s each.
b. RSS of the daemon with 100 000 waiting against 100 waiting, run one after the other with the
   same settings: the peak from start to ``RSS_WINDOW`` seconds after the first thumbnail (model
   loaded, photos being processed), and the steady RSS (the median of that window's last
   ``STEADY`` seconds); target ratio ≤ 1.3 for both.
c. One idle poll of ``FolderPoller`` over those 100 000 files in 1 000 folders, in this process
   once the daemon has stopped: CPU per poll, and as a share of one core at the default
   ``POLL_INTERVAL`` (2 s); target < 5 %.
d. 5 000 photos waiting in ``loja-a``; one photo dropped into ``loja-b`` once the daemon is busy:
   its latency against ``SETTLE_SECONDS`` + 2 × one photo's processing time (the median of the
   daemon's own per-photo times).

Run alone: ``.venv/bin/python bench/backlog.py [--quick] [--only start|fair]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import inputs
from daemon import Daemon, RssSampler
from report import median, mib, table

SUMMARY: dict[str, float] = {}
RSS_WINDOW = 10.0  # seconds after the first thumbnail over which RSS is still sampled
STEADY = 5.0  # the last seconds of that window: the steady RSS is their median
SETTLE = 1.0


@dataclass
class Start:
    ready: float  # seconds from the process start to /readyz answering 200
    first: float  # ... to the first thumbnail published
    peak: int  # RSS, from start to RSS_WINDOW after the first thumbnail
    steady: int  # median RSS over that window's last STEADY seconds
    done: int  # thumbnails published by the end of the window


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


def _published(d: Daemon, stop_at: int = 1) -> int:
    """Thumbnails in the output (hidden temp files not counted), counting up to ``stop_at``."""
    count = 0
    for _, _, files in os.walk(d.output):
        count += sum(1 for name in files if not name.startswith("."))
        if count >= stop_at:
            break
    return count


def _start_timed(d: Daemon) -> Start:
    started = time.monotonic()
    d.start(timeout=120)
    ready = first = None
    with RssSampler(d) as sampler:
        while time.monotonic() - started < 180 and first is None:
            d.check_alive()
            if ready is None and _ready(d):
                ready = time.monotonic() - started
            if first is None and _published(d):
                first = time.monotonic() - started
            time.sleep(0.02)
        end = time.monotonic() + RSS_WINDOW
        time.sleep(RSS_WINDOW)
        steady = sampler.between(end - STEADY, end)
        peak = sampler.peak
    return Start(ready or float("nan"), first or float("nan"), peak,
                 int(statistics.median(steady)) if steady else 0, _published(d, 10**9))


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def start_backlog(big: int = 100_000, small: int = 100) -> list[str]:
    tiny = inputs.tiny_jpeg()
    rows, measured, load = [], {}, [_load()]
    poll_lines: list[str] = []
    for count in (small, big):
        with Daemon(f"backlog{count}", SETTLE_SECONDS=SETTLE, OUTPUT_SIZE=64,
                    RESCAN_INTERVAL=3600) as d:
            made = time.monotonic()
            _fill(d.inbox, count, tiny)
            made = time.monotonic() - made
            run = measured[count] = _start_timed(d)
            if count == big:
                d.stop()  # a quiet tree: the poll must find nothing changed
                poll_lines = idle_poll(d.inbox)
        rows.append((f"{count} waiting", f"{run.ready:.1f} s", f"{run.first:.1f} s",
                     mib(run.peak), mib(run.steady), str(run.done), f"{made:.0f} s"))
    load.append(_load())
    ready, first = measured[big].ready, measured[big].first
    peak_ratio = measured[big].peak / max(measured[small].peak, 1)
    steady_ratio = measured[big].steady / max(measured[small].steady, 1)
    SUMMARY.update(ready_s=ready, first_s=first, rss_ratio=max(peak_ratio, steady_ratio),
                   peak_ratio=peak_ratio, steady_ratio=steady_ratio)
    return [f"  tiny JPEGs in 10 shops × 100 folders, SETTLE_SECONDS={SETTLE:g}, WORKERS=2, "
            f"OUTPUT_SIZE=64; {load[0]} before, {load[1]} after",
            table(["at start", "READY", "first thumbnail", "peak RSS", "steady RSS",
                   f"done by first + {RSS_WINDOW:.0f} s", "files made in"], rows),
            table([f"{big} waiting", "target", "measured", ""], [
                ("READY after start", "≤ 5 s", f"{ready:.1f} s", _met(ready <= 5)),
                ("first thumbnail after start", "≤ 5 s", f"{first:.1f} s", _met(first <= 5)),
                (f"peak RSS ÷ {small} waiting's", "≤ 1.3 ×", f"{peak_ratio:.2f} ×",
                 _met(peak_ratio <= 1.3)),
                (f"steady RSS ÷ {small} waiting's", "≤ 1.3 ×", f"{steady_ratio:.2f} ×",
                 _met(steady_ratio <= 1.3))]),
            ""] + poll_lines


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
        while _published(d, 6) < 6 and time.monotonic() < deadline:  # in loja-a/, not the top
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("--quick", action="store_true", help="20 000 and 1 000 files")
    parser.add_argument("--only", choices=("start", "fair"),
                        help="a, b and c (start), or d (fair) alone")
    args = parser.parse_args(argv)
    if args.only != "fair":
        for line in start_backlog(big=20_000 if args.quick else 100_000):
            print(line, flush=True)
    if args.only != "start":
        for line in fairness(backlog=1000 if args.quick else 5000):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
