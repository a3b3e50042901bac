"""`make soak`: the real daemon for an hour under a steady drip, with a remote that fails now and then.

A benchmark, not a test: it measures and prints, and exits 0 on a finished run (1 when the daemon
died). What runs:

- ``thumbgen run`` as a subprocess on a fresh tree (``bench/daemon.py``: code defaults plus
  ``REMOVAL_BACKEND=gradio`` against the test suite's Gradio server, ``tests/gradio_app.py``, on
  127.0.0.1; the local model as fallback, as shipped; the scheduler on);
- one file a second, renamed into ``produtos/loja-a`` or ``produtos/loja-b`` (alternately):
  nine in ten are sample photos of ``tests/data/`` (products, EXIF, cut-out examples), most
  re-encoded with a few pixels changed so that the cut-out cache does not answer them all, one in
  five an exact copy (a cache hit); one in ten is a hostile file of ``tests/data/hostile/``
  (corrupt, truncated, bombs, odd formats), copied byte for byte;
- the Gradio server fails now and then, in turn (see ``FAULTS``): killed and restarted, calls
  that hang past ``GRADIO_TIMEOUT``, an error on every call, slow answers.

Every 5 minutes and at the end a row: RSS of the daemon and its children, open fds, threads, temp
files (under the daemon's TMPDIR ``.thumbgen/tmp/`` plus hidden ``*.tmp`` anywhere in the tree),
queue depth and the files done / rejected / failed (``/metrics``). At the end: the slope of RSS
(least squares, MB per 10 minutes) over the last 30 minutes of the drip (the second half when
the drip is shorter than an hour), and whether anything was lost: every input a thumbnail, or in
``_falhas/`` with its ``.erro.txt``.

Run: ``make soak`` (``SOAK_MINUTES=6 make soak`` for a short one), or
``.venv/bin/python bench/soak.py --minutes 60``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from background import Background  # noqa: E402
from daemon import Daemon, DaemonExited, RssSampler  # noqa: E402
from report import table  # noqa: E402
from tests.gradio_app import GradioServer  # noqa: E402

DATA = REPO / "tests" / "data"
ROW_EVERY = 300.0          # seconds between rows
SLOPE_WINDOW = 1800.0      # the last 30 minutes of the drip
SLOPE_TARGET = 1.0         # MB per 10 minutes
DRAIN_TIMEOUT = 600.0      # seconds the daemon gets to finish what was dropped
SHOPS = ("loja-a", "loja-b")
MB = 1024**2
# The remote's faults, one after another, each ``FAULT_SECONDS`` long, one every ``FAULT_EVERY``
# seconds from the first minute on: "down" kills the server (SIGKILL, mid-call) and starts it again
# at the end; "hang" holds the next 2 calls past GRADIO_TIMEOUT; "error" answers every call with an
# application error (gradio_client's AppError); "slow" answers after 3 s.
FAULTS = ("down", "hang", "error", "slow")
FAULT_SECONDS = 30.0
FAULT_EVERY = 120.0
SETTINGS = {"REMOVAL_BACKEND": "gradio", "GRADIO_TIMEOUT": 10, "GRADIO_RETRY_ATTEMPTS": 2,
            "WORKERS": 2, "SCHEDULER_ENABLED": "true", "SETTLE_SECONDS": 2.0}


def samples() -> list[Path]:
    return sorted([*DATA.glob("products/*.jpg"), *DATA.glob("exif/*.jpg"),
                   *DATA.glob("cutouts/*.jpg")])


def hostile() -> list[Path]:
    return sorted(p for p in (DATA / "hostile").iterdir() if p.is_file())


# -- the drip ----------------------------------------------------------------------------------

class Drip(Background):
    """One file a second into the inbox, in a thread; remembers every name it dropped."""

    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.good = samples()
        self.bad = hostile()
        self.dropped: list[str] = []   # paths relative to the inbox
        self.hostile = 0
        super().__init__("drip")
        for shop in SHOPS:
            (d.inbox / shop).mkdir(exist_ok=True)

    def _loop(self) -> None:
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            self.drop(n)
            n += 1
            self._stop.wait(max(0.0, start + n - time.monotonic()))

    def drop(self, n: int) -> None:
        shop = SHOPS[n % 2]
        if n % 10 == 9:
            source = self.bad[(n // 10) % len(self.bad)]
            name = f"s{n:05d}-{source.name}"
            shutil.copyfile(source, self.d.staging / name)
            self.hostile += 1
        else:
            source = self.good[(n - n // 10) % len(self.good)]
            name = f"s{n:05d}-{source.name}"
            if n % 5 == 0:
                shutil.copyfile(source, self.d.staging / name)
            else:
                (self.d.staging / name).write_bytes(variant(source, n))
        os.rename(self.d.staging / name, self.d.inbox / shop / name)
        self.dropped.append(f"{shop}/{name}")


def variant(source: Path, n: int) -> bytes:
    """``source`` re-encoded with a 4×4 block in a corner coloured by ``n``: other pixels, so
    another cut-out cache key; EXIF (orientation) and ICC kept."""
    with Image.open(source) as im:
        exif, icc = im.info.get("exif"), im.info.get("icc_profile")
        rgb = im.convert("RGB")
    rgb.paste((n % 251, (n // 251) % 251, 128), (0, 0, 4, 4))
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", quality=90, **({"exif": exif} if exif else {}),
             **({"icc_profile": icc} if icc else {}))
    return buf.getvalue()


# -- the failing remote ------------------------------------------------------------------------

class Faults(Background):
    """Turns the Gradio server's faults on and off in a thread (see ``FAULTS``)."""

    def __init__(self, server: GradioServer) -> None:
        self.server = server
        self.count: dict[str, int] = {f: 0 for f in FAULTS}
        super().__init__("faults")

    def _loop(self) -> None:
        k = 0
        while not self._stop.wait(FAULT_EVERY if k else 60.0):
            fault = FAULTS[k % len(FAULTS)]
            k += 1
            self.count[fault] += 1
            self._on(fault)
            self._stop.wait(FAULT_SECONDS)
            self._off(fault)

    def _on(self, fault: str) -> None:
        if fault == "down":
            self.server.kill()
        elif fault == "hang":
            self.server.set(hang_calls=2)
        elif fault == "error":
            self.server.set(**{"raise": "soak: the Space is broken for a while"})
        elif fault == "slow":
            self.server.set(delay=3.0)

    def _off(self, fault: str) -> None:
        self.server.set()
        if fault == "down":
            try:
                self.server.start()
            except AssertionError as exc:  # say so; the next "down" tries again
                print(f"  the Gradio server did not start again: {exc}", flush=True)


# -- what is measured --------------------------------------------------------------------------

@dataclass
class Row:
    elapsed: float
    rss: int
    fds: int
    threads: int
    temp: int
    queue: float
    queue_max: float
    in_flight: float
    outcomes: dict[str, float]
    dropped: int

    def cells(self) -> list[object]:
        return [f"{self.elapsed / 60:.1f} min".replace(".0 ", " "), f"{self.rss / MB:.0f}",
                self.fds, self.threads, self.temp, f"{self.queue:.0f}", f"{self.queue_max:.0f}",
                f"{self.in_flight:.0f}", self.dropped,
                *(f"{self.outcomes.get(o, 0):.0f}" for o in ("done", "rejected", "failed"))]


HEADERS = ["elapsed", "RSS MB", "fds", "threads", "temp files", "queue", "queue max",
           "in flight", "dropped", "done", "rejected", "failed"]
WIDTHS = [max(len(h), 7) for h in HEADERS]


def live(cells: list[object]) -> str:
    """One row as the table prints it, with fixed widths, so rows printed apart line up."""
    parts = [str(cells[0]).ljust(WIDTHS[0])] + [str(c).rjust(w) for c, w in
                                                 zip(cells[1:], WIDTHS[1:])]
    return "  " + "  ".join(parts)


@dataclass
class Soak:
    d: Daemon
    drip: Drip
    start: float = field(default_factory=time.monotonic)
    rows: list[Row] = field(default_factory=list)
    queue_max: float = 0.0  # the deepest queue seen since the last row (read every 5 s)

    def watch_queue(self) -> None:
        depth = self.d.metrics().get("thumbgen_queue_depth")
        if depth is not None:
            self.queue_max = max(self.queue_max, depth)

    def row(self) -> Row:
        self.d.check_alive()
        procs = [self.d.ps, *self.d.ps.children(recursive=True)]
        metrics = self.d.metrics()
        outcomes = {o: metrics.get(f'thumbgen_files_total{{outcome="{o}"}}', float("nan"))
                    for o in ("done", "rejected", "failed")}
        queue = metrics.get("thumbgen_queue_depth", float("nan"))
        row = Row(time.monotonic() - self.start, self.d.rss(),
                  sum(p.num_fds() for p in procs), sum(p.num_threads() for p in procs),
                  temp_files(self.d.base), queue, max(self.queue_max, queue),
                  metrics.get("thumbgen_in_flight", float("nan")), outcomes,
                  len(self.drip.dropped))
        self.queue_max = 0.0
        self.rows.append(row)
        return row


def temp_files(base: Path) -> int:
    """Files under the daemon's TMPDIR (``.thumbgen/tmp/``), plus hidden ``*.tmp`` anywhere."""
    count = 0
    for folder, dirs, files in os.walk(base):
        inside_tmp = (Path(folder).relative_to(base).parts[:3]
                      == ("produtos", ".thumbgen", "tmp"))
        count += sum(1 for f in files if inside_tmp or (f.startswith(".") and f.endswith(".tmp")))
    return count


def slope(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS against time, in MB per 10 minutes."""
    if len(samples) < 3:
        return float("nan")
    t0 = samples[0][0]
    xs = [t - t0 for t, _ in samples]
    ys = [rss / MB for _, rss in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var * 600.0


def lost(d: Daemon, dropped: list[str]) -> tuple[list[str], dict[str, int], list[str]]:
    """Inputs that are neither a thumbnail nor in ``_falhas/`` with a note; where each went; and
    the sample photos (not hostile files) that ended in ``_falhas/``."""
    stems = {p.stem for p in d.output.rglob("*") if p.is_file()}
    failed = d.inbox / "_falhas"
    names = {p.name for p in failed.rglob("*") if p.is_file()} if failed.is_dir() else set()
    where = {"thumbnail": 0, "_falhas/ with a note": 0}
    missing, good_failed = [], []
    bad = {p.name for p in hostile()}
    for rel in dropped:
        name = rel.rsplit("/", 1)[-1]
        if Path(name).stem in stems:
            where["thumbnail"] += 1
        elif name in names and f"{name}.erro.txt" in names:
            where["_falhas/ with a note"] += 1
            if name.split("-", 1)[1] not in bad:
                good_failed.append(rel)
        else:
            missing.append(rel)
    return missing, where, good_failed


def labelled(metrics: dict[str, float], name: str) -> str:
    """The non-zero samples of one labelled counter: ``a=1, b=2``."""
    parts = [f"{key[len(name) + 1:-1]} {value:.0f}" for key, value in sorted(metrics.items())
             if key.startswith(name + "{") and value]
    return ", ".join(parts) or "none"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def flat(values: list[float], slack: float) -> bool:
    """No growth: the second half's highest value is within ``slack`` of the first half's."""
    if len(values) < 2:
        return True
    half = len(values) // 2
    return max(values[half:]) <= max(values[:half]) + slack


# -- the run -----------------------------------------------------------------------------------

def run(minutes: float) -> int:
    drip_seconds = minutes * 60.0
    work = HERE / ".data"
    work.mkdir(exist_ok=True)
    server_root = Path(os.path.realpath(work)) / f"soak-gradio-{os.getpid()}"
    server = GradioServer(server_root, concurrency=4, max_size=4).start()
    print(f"thumbgen soak — {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {minutes:g} minutes, "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"  daemon: thumbgen run, {SETTINGS}; Gradio test server {server.url} "
          f"(4 calls at once, queue 4)")
    print(f"  drip: 1 file/s into {', '.join(SHOPS)}; {len(samples())} sample photos "
          f"(4 in 5 re-encoded with other pixels), 1 in 10 of {len(hostile())} hostile files")
    print(f"  remote faults in turn, {FAULT_SECONDS:.0f} s each, every {FAULT_EVERY:.0f} s "
          f"from 1 min: {', '.join(FAULTS)}", flush=True)
    code = 0
    try:
        with Daemon("soak", GRADIO_API_URL=server.url, **SETTINGS) as d:
            d.start()
            code = soak(d, server, drip_seconds)
    except DaemonExited as exc:
        print(f"  the daemon died: {exc}", flush=True)
        code = 1
    finally:
        server.stop()
        shutil.rmtree(server_root, ignore_errors=True)
    return code


def soak(d: Daemon, server: GradioServer, drip_seconds: float) -> int:
    drip = Drip(d)
    faults = Faults(server)
    state = Soak(d, drip)
    print(live(HEADERS) + "\n  " + "  ".join("-" * w for w in WIDTHS), flush=True)
    with RssSampler(d, interval=5.0) as sampler:
        drip.start()
        faults.start()
        try:
            next_row, next_queue = ROW_EVERY, 5.0
            while (now := time.monotonic() - state.start) < drip_seconds:
                if now >= next_queue:
                    state.watch_queue()
                    next_queue += 5.0
                if now >= next_row:
                    print(live(state.row().cells()), flush=True)
                    next_row += ROW_EVERY
                time.sleep(min(1.0, max(0.0, drip_seconds - now)))
                d.check_alive()
        finally:
            drip.stop()
            faults.stop()
            server.set()
        drip_end = time.monotonic()
        print(f"  drip stopped after {len(drip.dropped)} files; waiting for the daemon to finish "
              "them …", flush=True)
        drained = wait_drained(d, drip.dropped, DRAIN_TIMEOUT)
        final = state.row()
    window = min(SLOPE_WINDOW, drip_seconds / 2)
    rss_slope = slope([(t, r) for t, r in sampler.samples if drip_end - window <= t <= drip_end])
    missing, where, good_failed = lost(d, drip.dropped)
    metrics = d.metrics()
    stop_start = time.monotonic()
    code = d.stop()
    stop_seconds = time.monotonic() - stop_start
    left_tmp = temp_files(d.base)
    report(state, final, drained, window, rss_slope, missing, where, drip, faults)
    print("  rejected by reason: " + labelled(metrics, "thumbgen_failures_total"))
    print("  removal calls by backend and outcome: "
          + labelled(metrics, "thumbgen_removal_requests_total"))
    print(f"  sample photos (not hostile) in _falhas/: {len(good_failed)}"
          + (": " + ", ".join(good_failed[:10]) if good_failed else ""))
    print(f"  SIGTERM at the end: exit {code} in {stop_seconds:.1f} s; temp files left after the "
          f"stop: {left_tmp}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
          flush=True)
    return 0


def wait_drained(d: Daemon, dropped: list[str], timeout: float) -> float | None:
    """Seconds until no dropped file is left in the inbox and nothing is queued or in flight."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        d.check_alive()
        waiting = [rel for rel in dropped if (d.inbox / rel).exists()]
        metrics = d.metrics()
        if not waiting and metrics.get("thumbgen_queue_depth") == 0 \
                and metrics.get("thumbgen_in_flight") == 0:
            return time.monotonic() - start
        time.sleep(1.0)
    return None


def report(state: Soak, final: Row, drained: float | None, window: float, rss_slope: float,
           missing: list[str], where: dict[str, int], drip: Drip, faults: Faults) -> None:
    print(live(final.cells()) + "   (end, drained)")
    rows = [r for r in state.rows if r.elapsed >= ROW_EVERY - 1]  # from the first row on
    print("\n" + table(HEADERS, [r.cells() for r in rows]))
    print(f"\n  drained in {drained:.0f} s after the drip" if drained is not None
          else f"\n  NOT drained {DRAIN_TIMEOUT:.0f} s after the drip")
    print(f"  remote faults: {', '.join(f'{k} ×{v}' for k, v in faults.count.items())}; "
          f"inputs: {len(drip.dropped)} ({drip.hostile} hostile)")
    checks = [
        ("open fds flat", [r.fds for r in rows], 2),
        ("threads flat", [r.threads for r in rows], 2),
        ("temp files flat", [r.temp for r in rows], 2),
        ("queue depth flat (deepest of each row's 5 min)", [r.queue_max for r in rows], 5),
    ]
    lines = []
    for name, values, slack in checks:
        shown = f"{min(values):.0f}–{max(values):.0f}" if values else "-"
        lines.append((name, shown, verdict(flat(values, slack))))
    lines.append((f"RSS slope, last {window / 60:.0f} min of the drip (< {SLOPE_TARGET:g} MB/10 min)",
                  f"{rss_slope:+.2f} MB/10 min", verdict(rss_slope < SLOPE_TARGET)))
    lines.append(("nothing lost (thumbnail, or _falhas/ + .erro.txt)",
                  f"{len(missing)} lost; " + ", ".join(f"{v} {k}" for k, v in where.items()),
                  verdict(not missing)))
    print(table(["target", "measured", "verdict"], lines))
    if missing:
        print("  lost: " + ", ".join(missing[:20]) + (" …" if len(missing) > 20 else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row-minutes", type=float, default=5.0,
                        help="minutes between rows (default 5)")
    parser.add_argument("--minutes", type=float,
                        default=float(os.environ.get("SOAK_MINUTES", "60")),
                        help="minutes of drip (default $SOAK_MINUTES or 60)")
    args = parser.parse_args(argv)
    global ROW_EVERY
    ROW_EVERY = args.row_minutes * 60.0
    os.chdir(REPO)
    # a SIGTERM unwinds like Ctrl-C, so the daemon and the server are stopped and the trees removed
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return run(args.minutes)


if __name__ == "__main__":
    sys.exit(main())
